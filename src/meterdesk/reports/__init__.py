"""Read-side queries for screens and reports: the room grid, room detail, device lists and the
tariff what-if. They read other areas' tables (a read model) and never write."""

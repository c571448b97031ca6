"""Request and response bodies. Money and exact quantities are decimal strings, never JSON
numbers (a number is refused with 422); request bodies refuse unknown fields."""

"""Read-side queries of the API: lists with filters and keyset pages, and single rows — every
one restricted to the caller's organisation. (The areas' services have no read use cases for
these yet; see docs/api.md.)"""

"""The console's pages, one module per page, each a Litestar controller over services."""

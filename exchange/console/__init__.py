"""The operator console at ``/console``: server-rendered pages over the same services as the API.

Console users (``litestar console add-user``) sign in with a password (Argon2) and a TOTP code;
their sessions live in the database, every form carries the session's CSRF token, failed logins
lock a name or an address out for a while, and every action is written to an audit log. The
figures come from :mod:`exchange.reporting` and the features' own services; nothing here
computes a figure of its own."""

"""The rules and aggregates of user_svc: accounts (accounts.py) and sessions (sessions.py)."""

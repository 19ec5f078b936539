"""Local sandbox of the three upstream systems (OAuth2 token, Account Management, ESG ratings)."""

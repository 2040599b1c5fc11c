"""The gateway's SQL: sign-ins and refresh tokens (the caller owns the transaction)."""

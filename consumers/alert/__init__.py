"""`snoopbus consume alert`: Sigma rules on live events (see README.md)."""

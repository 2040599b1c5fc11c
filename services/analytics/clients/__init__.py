"""Calls analytics makes to other services (protobuf stays in here)."""

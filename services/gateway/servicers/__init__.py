"""Thin public servicers: validate what the gateway itself uses, call the owning
service with the caller's family, translate. Each method takes the principal
that `services.gateway.auth.guard` admitted as its third argument."""

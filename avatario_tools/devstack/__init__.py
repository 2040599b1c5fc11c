"""The one-command local stack: migrate, start every service as a supervised
local process, wait for health, run the demo through the public API."""

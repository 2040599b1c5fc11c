"""Simulated children (simulator, simgames) and flag rates over simulated
populations (evaluation). Built on analytics' public domain modules; the
analytics server never imports them."""

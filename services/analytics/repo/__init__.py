"""Analytics repository functions. Each takes the AsyncSession it works in;
callers (the servicer, the outbox worker, the renorm job) own transactions."""

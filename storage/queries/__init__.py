"""SQL, one module per domain. Every function is synchronous and takes the connection it runs on:
the store decides which thread and which transaction."""

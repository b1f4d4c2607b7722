"""Every edge to the outside world, and the top of the house: the ASGI app that mounts all of them on
one port (`app.py`, the composition root), the server runner and the `parley` command line."""

"""The hub's app under stock uvicorn: an ASGI server that is not one of the hub's own, so its WebSocket
protocol has no `parley.websocket.send_many` and the session writes frames one `websocket.send` at a
time. For `tests/test_websocket.py`.

    python -m tests.stock_uvicorn PORT      (settings from the PARLEY_* variables)
"""

import sys

import uvicorn

from bridges.app import create_app
from hub.config import Settings


def main() -> None:
    uvicorn.run(create_app(Settings.from_env()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()

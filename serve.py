"""Run the aggregator: load feeds.yaml, open the store, poll on schedule, serve topic feeds.

    python serve.py [--config feeds.yaml] [--host H] [--port P] [--no-poll]

The same as ``aggregator serve``. Ctrl-C stops cleanly: each poll is saved in one
transaction, so none is left half-saved.
"""

from aggregator.cli import serve_main

if __name__ == "__main__":
    serve_main()

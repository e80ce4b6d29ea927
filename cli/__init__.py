"""``bertqueue``: a command-line client of the platform's REST API (``/api/v1``).

A pure HTTP client: it imports nothing from the platform's packages (core, web, worker, ml, models), so it can be
installed and run on any machine that reaches the API. ``cli.main`` holds the commands, ``cli.client`` the HTTP
calls, ``cli.waiting`` the job progress bar, ``cli.multipart`` the streamed uploads and ``cli.output`` the tables.
"""

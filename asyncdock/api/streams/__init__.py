"""The HTTP side of a container's streams: attach (hijacked, and over a websocket), logs,
docker cp's archive and export, exec start, stats.

The rule: this package is the only place that turns container streams into HTTP. Handlers here
read the request (query, headers, body), answer with the status and headers, hijack or upgrade
the connection and frame the bytes on it (stdcopy, websocket, chunked JSON); what they stream
comes from asyncdock/containers, which knows nothing of requests or responses.
"""

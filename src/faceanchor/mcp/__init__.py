"""faceanchor as an MCP server (the official ``mcp`` SDK): tools an agent calls to keep a face.

:func:`faceanchor.mcp.server.build_server` builds the server around a
:class:`~faceanchor.mcp.backend.Backend`, the faceanchor HTTP API it speaks to: a running server
(URL + key), an embedded one (the API app in this process, :func:`~faceanchor.mcp.backend.embedded`)
or the app it is mounted in (``faceanchor serve``: :func:`~faceanchor.mcp.mount.mount`). Nothing is
built at import time; only the CLI imports this package.
"""

"""Sluice's own HTTP/1.1 server protocol (asyncio + httptools), served by uvicorn's process machinery:
`protocol.HttpProtocol` is the connection, `exchange.Exchange` one request and its response, `wire` the bytes
the server writes itself and the name of the disconnect hook it offers apps."""

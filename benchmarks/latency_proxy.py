"""A TCP proxy on 127.0.0.1 that makes a loopback server behave like a distant one: each request's
response starts `delay_s` late (a round trip to real S3 is 10-50 ms, SeaweedFS on loopback a fraction
of a millisecond), and uploads can be held to `upload_bytes_per_s`. The kernel here has no netem.

    with LatencyProxy(target_port, delay_s=0.02) as proxy:
        ... endpoint_url = proxy.url ...
"""

import asyncio
import socket
import threading
import time
from types import TracebackType


class LatencyProxy:
    def __init__(self, target_port: int, delay_s: float = 0.02, upload_bytes_per_s: float | None = None) -> None:
        self.target_port, self.delay_s, self.upload_bytes_per_s = target_port, delay_s, upload_bytes_per_s
        self.requests = 0  # responses delayed: one per request on a keep-alive connection
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="latency-proxy", daemon=True)
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self.port: int = listener.getsockname()[1]
        self._listener = listener

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LatencyProxy":
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._connection, sock=self._listener))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:  # open connections end with the proxy
            server.close()
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self._loop.close()

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the server is down: the client sees a refused connection, as it would directly
            client_writer.close()
            return
        request_sent = asyncio.Event()  # set by a request, cleared by the start of its response
        try:
            await asyncio.gather(
                self._pump(client_reader, server_writer, upstream=True, request_sent=request_sent),
                self._pump(server_reader, client_writer, upstream=False, request_sent=request_sent),
                return_exceptions=True,
            )
        except asyncio.CancelledError:  # the proxy stops: ending quietly keeps asyncio from logging each one
            return

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool, request_sent: asyncio.Event) -> None:
        try:
            while chunk := await reader.read(1 << 16):
                if upstream:
                    request_sent.set()
                    if self.upload_bytes_per_s:
                        await asyncio.sleep(len(chunk) / self.upload_bytes_per_s)
                elif request_sent.is_set():  # the first bytes of a response: one round trip late
                    request_sent.clear()
                    self.requests += 1
                    await asyncio.sleep(self.delay_s)
                writer.write(chunk)
                await writer.drain()
        finally:
            writer.close()


if __name__ == "__main__":  # a quick look: python benchmarks/latency_proxy.py PORT
    import sys
    import urllib.request

    with LatencyProxy(int(sys.argv[1]), delay_s=0.02) as proxy:
        started = time.perf_counter()
        for _ in range(10):
            urllib.request.urlopen(proxy.url, timeout=10).read()
        print(f"10 requests through the proxy: {time.perf_counter() - started:.3f} s")

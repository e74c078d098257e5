"""Streams that do not end well: bounded memory for slow readers, everything freed at once when a
client goes away, and honest accounting of both.

The server runs in this process (aiohttp's test server) so the test can look inside it: its
tasks, its chunk generators, its memory.  Clients are raw sockets, so a test decides exactly
when a client stops reading or drops the connection.
"""

from __future__ import annotations

import asyncio
import gc
import json
import resource
import socket
import threading
import types

import numpy as np
import pytest
from app_client import service_of
from test_api import metric, scrape, wait_until
from tts_service.engines.espeak import EspeakEngine
from tts_service.errors import StreamBufferFull
from tts_service.stream_buffer import StreamBuffer

SPEECH = "/v1/audio/speech"
SENTENCE = "This sentence is one of many in a long text that a client asked to hear as a stream. "
LONG_TEXT = SENTENCE * 40  # about four minutes of speech, forty chunks


# -- the buffer on its own ---------------------------------------------------------------------


async def test_buffer_hands_chunks_over_in_order_and_ends():
    buffer = StreamBuffer(asyncio.get_running_loop(), max_samples=100, sample_rate=10)
    producer = threading.Thread(target=lambda: [buffer.put(np.full(10, i, np.float32)) for i in range(5)])
    producer.start()
    producer.join()
    buffer.end()
    got = []
    while (piece := await buffer.get()) is not None:
        got.append(int(piece.audio[0]))
    assert got == [0, 1, 2, 3, 4] and buffer.buffered_samples == 0


async def test_segments_made_out_of_order_are_read_in_order_each_ended_once():
    buffer = StreamBuffer(asyncio.get_running_loop(), max_samples=100, sample_rate=10, segments=3)
    buffer.put(np.full(5, 2, np.float32), segment=2)  # made first, read last
    buffer.put(np.full(5, 1, np.float32), segment=1)
    buffer.end_segment(2)
    buffer.end_segment(1)
    buffer.put(np.full(5, 0, np.float32), segment=0)
    buffer.end_segment(0)
    pieces = []
    while (piece := await buffer.get()) is not None:
        pieces.append((piece.segment, int(piece.audio[0]) if piece.audio.size else None, piece.last))
    assert pieces == [
        (0, 0, False),
        (0, None, True),
        (1, 1, False),
        (1, None, True),
        (2, 2, False),
        (2, None, True),
    ]


async def test_later_segments_wait_while_the_reader_is_behind_and_never_cut_the_stream_off():
    reads = []
    buffer = StreamBuffer(
        asyncio.get_running_loop(),
        max_samples=20,
        sample_rate=10,
        segments=3,
        on_read=lambda: reads.append(1),
    )
    assert buffer.admits(0) and buffer.admits(1)  # nothing waits yet
    assert buffer.put(np.zeros(15, np.float32), segment=0)
    assert buffer.put(np.zeros(15, np.float32), segment=1)  # ahead of the reader: taken, over the bound
    assert buffer.wanted and not buffer.overflowed
    assert buffer.admits(0) and not buffer.admits(2)  # 30 wait: segment 2 is held back
    assert (await buffer.get()).segment == 0 and reads == [1]  # 15 wait now: the batcher is poked
    assert buffer.admits(2)


async def test_only_the_segment_being_read_is_cut_off():
    buffer = StreamBuffer(asyncio.get_running_loop(), max_samples=20, sample_rate=10, segments=2)
    assert buffer.put(np.zeros(15, np.float32), segment=1) and buffer.put(np.zeros(15, np.float32), segment=1)
    assert buffer.put(np.zeros(15, np.float32), segment=0)  # its own waiting audio counts, 15 <= 20
    assert not buffer.put(np.zeros(15, np.float32), segment=0)  # 30 > 20 in the segment being read
    assert buffer.overflowed and buffer.buffered_samples == 0


async def test_a_chunk_longer_than_the_bound_is_taken_when_the_buffer_is_empty():
    buffer = StreamBuffer(asyncio.get_running_loop(), max_samples=10, sample_rate=10)
    assert buffer.put(np.zeros(50, np.float32))  # one sentence longer than the bound still streams
    assert not buffer.put(np.zeros(1, np.float32))  # but nothing may pile up behind it
    assert buffer.overflowed


async def test_buffer_cuts_a_stream_off_instead_of_growing_and_frees_it_at_once():
    cut = asyncio.Event()
    buffer = StreamBuffer(asyncio.get_running_loop(), max_samples=25, sample_rate=10)
    buffer.on_overflow(cut.set)
    assert buffer.put(np.zeros(10, np.float32)) and buffer.put(np.zeros(10, np.float32))
    assert not buffer.put(np.zeros(10, np.float32))  # 30 > 25: cut off, not buffered
    assert buffer.buffered_samples == 0 and not buffer.wanted and buffer.overflowed
    assert not buffer.put(np.zeros(1, np.float32))  # nothing more is taken
    await asyncio.wait_for(cut.wait(), 5)  # the response is told at once
    with pytest.raises(StreamBufferFull, match="TTS_STREAM_BUFFER_S"):
        await buffer.get()


async def test_a_closed_buffer_drops_everything_and_tells_the_engine():
    buffer = StreamBuffer(asyncio.get_running_loop(), max_samples=100, sample_rate=10)
    buffer.put(np.zeros(50, np.float32))
    buffer.close()
    assert buffer.buffered_samples == 0 and not buffer.wanted
    assert not buffer.put(np.zeros(1, np.float32))
    assert await buffer.get() is None


# -- over HTTP ---------------------------------------------------------------------------------


class CountingEngine(EspeakEngine):
    """The real engine, counting the sentences it synthesized for streams."""

    def __init__(self) -> None:
        super().__init__()
        self.sentences = 0
        self.lock = threading.Lock()

    def _synthesize_one(self, item):
        with self.lock:
            self.sentences += 1
        return super()._synthesize_one(item)


def stream_request(port: int, text: str) -> bytes:
    body = json.dumps({"input": text, "response_format": "pcm", "stream": True}).encode()
    return (
        f"POST {SPEECH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def open_stream(port: int, text: str, receive_buffer: int | None = None):
    """Send a streamed request on a raw socket; return once the status line and some audio arrived."""
    sock = socket.socket()
    if receive_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(stream_request(port, text))
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head + await reader.read(500)
    await reader.readexactly(64)  # audio is flowing
    return reader, writer


def drop(writer) -> None:
    """Go away abruptly, as a client that crashed or was killed (RST, no FIN)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


def open_chunk_generators() -> list:
    """The service's stream generators that were never closed (finished or closed ones have no frame)."""
    return [
        obj
        for obj in gc.get_objects()
        if type(obj) is types.AsyncGeneratorType  # not isinstance: torch's deprecated proxies warn on that
        and obj.ag_code.co_name == "chunks"
        and obj.ag_code.co_filename.endswith("speech_service.py")
        and obj.ag_frame is not None
    ]


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


@pytest.mark.parametrize("cancellation", [True, False], ids=["handler-cancellation", "aiohttp-default"])
async def test_a_hundred_streams_aborted_mid_way_leave_nothing_behind(make_service_client, cancellation):
    """``serve()`` cancels the handler of a client that went away (handler_cancellation, as in
    production); aiohttp's default lets it run until its next write fails. Either way: no task
    left pending, no chunk generator left open, the engine stops on the abandoned streams, the
    memory stays flat, and every abort is counted as one."""
    engine = CountingEngine()
    client = await make_service_client(
        engine, handler_cancellation=cancellation, max_batch_size=4, max_wait_ms=5
    )
    service, port = service_of(client), client.server.port
    await scrape(client)  # the test client's own connection exists before the baseline
    baseline_tasks = asyncio.all_tasks()
    engine.sentences = 0

    async def abort_one() -> None:
        _, writer = await open_stream(port, LONG_TEXT)
        drop(writer)  # as soon as its own audio flows

    async def abort_streams(count: int) -> None:
        for _ in range(count // 10):
            await asyncio.gather(*(abort_one() for _ in range(10)))

    async def settled() -> None:
        gc.collect()
        await wait_until(
            lambda: (
                service.batcher.queue_depth == 0
                and service.batcher.in_flight == 0
                and not (asyncio.all_tasks() - baseline_tasks - {asyncio.current_task()})
            )
        )

    await abort_streams(20)
    await settled()
    rss_after_20 = rss_bytes()
    await abort_streams(80)
    await settled()

    leftover = asyncio.all_tasks() - baseline_tasks - {asyncio.current_task()}
    assert not leftover, leftover
    assert open_chunk_generators() == []
    # Each abandoned stream cost a few sentences, not its forty.
    assert engine.sentences < 100 * 40 / 4, engine.sentences
    # Forty sentences of audio (~45 MB as float32) per stream would show at once if any were kept.
    assert rss_bytes() - rss_after_20 < 40 * 2**20, (rss_after_20 / 2**20, rss_bytes() / 2**20)
    samples = await scrape(client)
    assert metric(samples, "tts_requests_total", route=SPEECH, code="disconnected") == 100
    assert metric(samples, "tts_requests_total", route=SPEECH, code="200") == 0
    assert metric(samples, "tts_streams_aborted_total", reason="client_disconnected") == 100
    assert metric(samples, "tts_inflight_requests") == 0
    # The service goes on.
    response = await client.post(
        SPEECH, json={"input": "Still here. Yes.", "response_format": "pcm", "stream": True}
    )
    assert response.status == 200 and len(await response.read()) > 0


async def test_a_client_too_slow_to_read_one_long_segment_is_cut_off(make_service_client):
    """A generation cannot pause: within one segment (here the whole text is one), a reader that
    lets more than TTS_STREAM_BUFFER_S pile up is cut off, and the engine stops for it."""
    engine = CountingEngine()
    client = await make_service_client(engine, stream_buffer_s=1, segment_chars=4096)
    service, port = service_of(client), client.server.port
    engine.sentences = 0
    # A small receive window and no reading: the server's writes stall, its buffer fills.
    reader, writer = await open_stream(port, LONG_TEXT, receive_buffer=4096)
    await wait_until(
        lambda: metric_value(service, "tts_streams_aborted_total", reason="stream_buffer_full") == 1
    )
    received = b""
    try:
        while data := await reader.read(65536):
            received += data
    except ConnectionResetError:
        pass  # the server aborted the connection
    writer.close()
    assert not received.endswith(b"0\r\n\r\n")  # no final chunk: the client sees an incomplete response
    assert engine.sentences < 40  # the engine stopped making audio nobody would hear
    await wait_until(lambda: service.batcher.in_flight == 0)
    samples = await scrape(client)
    assert metric(samples, "tts_requests_total", route=SPEECH, code="aborted") == 1
    assert metric(samples, "tts_rejected_total", reason="stream_buffer_full") == 0  # not a rejection
    assert open_chunk_generators() == []


async def test_a_client_too_slow_to_read_a_segmented_text_pauses_it_and_holds_no_engine(make_service_client):
    """Between segments the service waits for the reader instead: nothing is cut off, the
    engine stops making audio ahead of it, and leaving frees the rest at once."""
    engine = CountingEngine()
    client = await make_service_client(engine, stream_buffer_s=1, max_batch_size=2)
    service, port = service_of(client), client.server.port
    engine.sentences = 0
    reader, writer = await open_stream(port, LONG_TEXT, receive_buffer=4096)
    batcher = service.batcher
    # Paused: nothing runs, and every segment left is held back until the reader catches up.
    await wait_until(lambda: batcher.in_flight == 0 and 0 < batcher.held_back == batcher.queued_items)
    made = engine.sentences
    assert made < 40 and batcher.queued_items == 40 - made, (made, batcher.queued_items)
    assert metric_value(service, "tts_streams_aborted_total", reason="stream_buffer_full") == 0
    drop(writer)
    await wait_until(lambda: batcher.queue_depth == 0 and batcher.in_flight == 0)
    assert engine.sentences == made  # nothing was made for a client that left
    await wait_until(
        lambda: metric_value(service, "tts_requests_total", route=SPEECH, code="disconnected") == 1
    )
    assert open_chunk_generators() == []


def metric_value(service, name: str, **labels) -> float:
    """A sample read from the service's registry directly (no request needed)."""
    value = service.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value

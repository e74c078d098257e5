"""``kubetts-say``: speak a text through a running kubetts service, from a shell or a script.

    kubetts-say "你好，欢迎使用 kubetts。" -o hello.wav
    kubetts-say "Hello there." -o - | aplay                 # a WAV on stdout, into a player
    kubetts-say "A long text..." --stream -o - | ffplay -nodisp -autoexit -
    echo "from a pipe" | kubetts-say - -o out.mp3           # the text from stdin; mp3 from the name

It calls ``POST /v1/audio/speech`` of the service at ``--url`` (default
``http://127.0.0.1:8080``, what ``./dev serve`` runs), sending ``TTS_API_KEY`` (or ``--api-key``)
as a bearer token when set.  The format comes from ``--format``, else from the output file's
extension, else WAV.  ``--stream`` writes the audio as the service makes it (a player reading
the pipe starts before the text is finished).  On an error it writes the service's own message
to stderr and exits 1 (2 for bad arguments, 3 when the service cannot be reached); a failed or
cut-off download leaves no partial output file behind.

Only the standard library: it runs wherever the service's package is installed, no extras.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO

DEFAULT_URL = "http://127.0.0.1:8080"
API_KEY_ENV = "TTS_API_KEY"
FORMATS = ("wav", "mp3", "flac", "opus", "aac", "pcm")  # the service's; a test keeps them equal
STREAM_FORMATS = ("wav", "mp3", "pcm", "opus", "aac")
CHUNK = 1 << 14

EXIT_SERVICE_ERROR, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class SayError(Exception):
    """What went wrong, as one line for stderr, and the exit status."""

    def __init__(self, message: str, status: int = EXIT_SERVICE_ERROR) -> None:
        super().__init__(message)
        self.status = status


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kubetts-say",
        description="Speak a text through a running kubetts service and write the audio.",
        epilog=f"Environment: {API_KEY_ENV} is sent as a bearer token (the service's TTS_API_KEYS).",
    )
    parser.add_argument("text", help="the text to speak; - reads it from stdin")
    parser.add_argument(
        "-o", "--output", default="-", help="output file; - (the default) writes to stdout, for a pipe"
    )
    parser.add_argument("--voice", help="a voice id or alias (GET /v1/voices); default: the service's")
    parser.add_argument(
        "--format", choices=FORMATS, help="audio format; default: from -o's extension, else wav"
    )
    parser.add_argument("--speed", type=float, help="0.25 to 4.0 (1 = normal)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the service (default {DEFAULT_URL})")
    parser.add_argument("--stream", action="store_true", help="write the audio as it is made")
    parser.add_argument("--api-key", help=f"bearer token (default: ${API_KEY_ENV})")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the service")
    return parser.parse_args(argv)


def audio_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lower().lstrip(".")
    return suffix if args.output != "-" and suffix in FORMATS else "wav"


def request_for(args: argparse.Namespace, text: str, fmt: str) -> urllib.request.Request:
    body: dict[str, object] = {"input": text, "response_format": fmt}
    if args.voice:
        body["voice"] = args.voice
    if args.speed is not None:
        body["speed"] = args.speed
    if args.stream:
        body["stream"] = True
    headers = {"Content-Type": "application/json"}
    key = args.api_key or os.environ.get(API_KEY_ENV, "")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return urllib.request.Request(
        args.url.rstrip("/") + "/v1/audio/speech", data=json.dumps(body).encode(), headers=headers
    )


def service_message(error: urllib.error.HTTPError) -> str:
    """The service's error message (its JSON error object), else the HTTP reason."""
    raw = error.read()
    try:
        detail = json.loads(raw)["error"]
        code = f" {detail['code']}" if detail.get("code") else ""
        return f"{detail['message']} (HTTP {error.code}{code})"
    except (ValueError, KeyError, TypeError):
        text = raw.decode("utf-8", "replace").strip()
        return f"HTTP {error.code} {error.reason}" + (f": {text[:200]}" if text else "")


def copy_response(response: BinaryIO, out: BinaryIO, flush: bool) -> int:
    written = 0
    while chunk := response.read(CHUNK) if not flush else response.read1(CHUNK):
        out.write(chunk)
        written += len(chunk)
        if flush:
            out.flush()
    return written


def speak(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO) -> str:
    """Do it; return what to report on stderr (``-o`` a file) or raise :class:`SayError`."""
    text = stdin.read().decode("utf-8") if args.text == "-" else args.text
    fmt = audio_format(args)
    if args.stream and fmt not in STREAM_FORMATS:
        raise SayError(f"{fmt} cannot be streamed; streamed formats: {', '.join(STREAM_FORMATS)}", EXIT_USAGE)
    to_stdout = args.output == "-"
    if to_stdout and hasattr(stdout, "isatty") and stdout.isatty():
        raise SayError(
            "stdout is a terminal: write to a file (-o out.wav) or pipe into a player (-o - | aplay)",
            EXIT_USAGE,
        )
    request = request_for(args, text, fmt)
    try:
        response = urllib.request.urlopen(request, timeout=args.timeout)
    except urllib.error.HTTPError as exc:
        raise SayError(service_message(exc)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SayError(f"cannot reach the service at {args.url}: {reason}", EXIT_UNREACHABLE) from None
    with response:
        voice = response.headers.get("X-TTS-Voice", "?")
        if to_stdout:
            try:
                copy_response(response, stdout, flush=args.stream)
                stdout.flush()
            except http.client.HTTPException as exc:  # the service cut the stream off
                raise SayError(f"the audio stream ended early: {exc!r}") from None
            except OSError as exc:  # the reader (a player) went away, or the connection broke
                raise SayError(f"the audio could not be written out: {exc}") from None
            return ""
        target = Path(args.output)
        # Written beside the target and renamed over it: an error leaves no half file.
        fd, temp = tempfile.mkstemp(dir=target.parent or Path("."), prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out:
                written = copy_response(response, out, flush=False)
            os.replace(temp, target)
        except http.client.HTTPException as exc:
            Path(temp).unlink(missing_ok=True)
            raise SayError(f"the audio stream ended early: {exc!r}; {target} was not written") from None
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise SayError(f"the audio could not be written to {target}: {exc}") from None
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    seconds = response.headers.get("X-TTS-Audio-Seconds")
    length = f", {float(seconds):.2f} s of audio" if seconds else ""
    return f"wrote {target} ({fmt}, {written} bytes{length}, voice {voice})"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        report = speak(args, sys.stdin.buffer, sys.stdout.buffer)
    except SayError as exc:
        print(f"kubetts-say: {exc}", file=sys.stderr)
        sys.exit(exc.status)
    except KeyboardInterrupt:
        sys.exit(130)
    if report:
        print(report, file=sys.stderr)


if __name__ == "__main__":
    main()

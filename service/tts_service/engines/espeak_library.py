"""ctypes binding to one private instance of the eSpeak NG 1.52 library.

eSpeak NG keeps all of its state in process-wide globals and is not thread-safe: two
threads synthesizing at once crash it (double free / SIGSEGV).  The dynamic loader
shares one copy of a shared object per path, so every ``EspeakLibrary`` copies the .so
shipped in the ``espeakng-loader`` wheel to a private temporary file and loads *that*
with its own ``CDLL``: each instance then has independent globals.  Even so, one
instance must only ever be driven from one thread at a time; the engine guarantees it
by living on the single inference worker thread, and the lock here is defence in depth.

Debian's ``espeak-ng`` 1.51 package mangles Mandarin, which is why the wheel's 1.52 is
used and never the system library.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

# espeak_AUDIO_OUTPUT
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# espeak_Initialize options: report errors instead of calling exit()
_INITIALIZE_DONT_EXIT = 0x8000
# espeak_Synth flags
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
# espeak_POSITION_TYPE
_POS_CHARACTER = 1
# espeak_PARAMETER
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

# eSpeak's accepted speaking-rate range in words per minute.
MIN_RATE_WPM = 80
MAX_RATE_WPM = 450
DEFAULT_RATE_WPM = 175

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """The eSpeak NG library refused a call; the message says which and why."""


def _wheel_paths() -> tuple[Path, Path]:
    import espeakng_loader

    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


class EspeakLibrary:
    """One independent, lock-protected eSpeak NG instance producing int16 PCM."""

    def __init__(self) -> None:
        library_path, data_path = _wheel_paths()
        self._tmpdir = tempfile.mkdtemp(prefix="kubetts-espeak-")
        private_copy = Path(self._tmpdir) / library_path.name
        shutil.copyfile(library_path, private_copy)
        self._lib = ctypes.CDLL(str(private_copy), mode=os.RTLD_LOCAL)
        self._declare_prototypes()
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        # Keep a reference: ctypes callbacks are freed when garbage collected.
        self._callback = _SynthCallback(self._on_samples)
        rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data_path).encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (returned {rate}) with data at {data_path}")
        self.sample_rate: int = rate
        self._lib.espeak_SetSynthCallback(self._callback)
        self._voice: str | None = None
        self._closed = False

    def _declare_prototypes(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int

    def _on_samples(self, wav, count, _events) -> int:  # called by eSpeak during espeak_Synth
        if wav and count > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = continue synthesis

    def synthesize(self, text: str, voice: str, rate_wpm: int = DEFAULT_RATE_WPM) -> np.ndarray:
        """Speak ``text`` with eSpeak voice name ``voice`` (e.g. ``en-us+m3``); int16 samples."""
        with self._lock:
            if self._closed:
                raise EspeakError("the eSpeak instance is closed")
            if voice != self._voice:
                err = self._lib.espeak_SetVoiceByName(voice.encode())
                if err != _EE_OK:
                    raise EspeakError(f"espeak_SetVoiceByName({voice!r}) failed with error {err}")
                self._voice = voice
            rate = max(MIN_RATE_WPM, min(MAX_RATE_WPM, int(rate_wpm)))
            self._lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            data = text.encode("utf-8") + b"\0"
            self._chunks = []
            err = self._lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
            )
            chunks, self._chunks = self._chunks, []
            if err != _EE_OK:
                raise EspeakError(f"espeak_Synth failed with error {err}")
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks)

    def close(self) -> None:
        """Terminate the instance and delete its private copy of the library."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._lib.espeak_Terminate()
            finally:
                shutil.rmtree(self._tmpdir, ignore_errors=True)

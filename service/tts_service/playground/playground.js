// kubetts playground: type, speak, listen. Plain JavaScript, no build step, nothing from outside.
//
// Whole files play through <audio>. Streamed pcm and wav play as they arrive through Web Audio:
// each chunk of 16-bit samples becomes an AudioBuffer scheduled right after the previous one.
// Other streamed formats (mp3, opus, aac) play once complete. The API key, when the service asks
// for one, lives in this tab's memory only (the input field): never in storage or a cookie.
"use strict";

const $ = (id) => document.getElementById(id);
const WAV_HEADER_BYTES = 44; // the service's streamed WAV: a 44-byte header, then 16-bit pcm

function authHeaders(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function serviceMessage(response) {
  try {
    const { error } = await response.json();
    return `${error.message} (HTTP ${response.status} ${error.code})`;
  } catch {
    return `HTTP ${response.status} ${response.statusText}`;
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

async function loadVoices() {
  const response = await fetch("/v1/voices", { headers: authHeaders() });
  if (!response.ok) {
    const message = await serviceMessage(response);
    if (response.status === 401) $("key-panel").hidden = false;
    showError(message);
    return;
  }
  clearError();
  const data = await response.json();
  $("engine-line").textContent = `engine: ${data.engine} · ${data.voices.length} voices`;
  const select = $("voice");
  select.replaceChildren(new Option("(the service's default)", ""));
  const voices = document.createElement("optgroup");
  voices.label = "voices";
  for (const v of data.voices) {
    voices.append(new Option(v.description ? `${v.id} — ${v.description}` : v.id, v.id));
  }
  select.append(voices);
  const aliases = Object.entries(data.aliases || {});
  if (aliases.length) {
    const group = document.createElement("optgroup");
    group.label = "OpenAI names";
    for (const [alias, target] of aliases) group.append(new Option(`${alias} → ${target}`, alias));
    select.append(group);
  }
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(2)} s`;
}

function wavBlob(chunks, sampleRate) {
  const samples = chunks.reduce((n, c) => n + c.length, 0);
  const view = new DataView(new ArrayBuffer(WAV_HEADER_BYTES + 2 * samples));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF");
  view.setUint32(4, 36 + 2 * samples, true);
  text(8, "WAVEfmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // pcm
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, 16, true);
  text(36, "data");
  view.setUint32(40, 2 * samples, true);
  let at = WAV_HEADER_BYTES;
  for (const chunk of chunks) {
    for (const sample of chunk) {
      view.setInt16(at, sample, true);
      at += 2;
    }
  }
  return new Blob([view], { type: "audio/wav" });
}

class Outcome {
  // What one Speak did, shown on the page and kept as data attributes (the browser test reads them).
  constructor(started, voice) {
    this.started = started;
    this.voice = voice;
    this.firstAudioMs = null;
    this.totalMs = null;
    this.audioSeconds = null;
    this.bytes = 0;
  }

  firstAudio() {
    if (this.firstAudioMs === null) this.firstAudioMs = performance.now() - this.started;
    this.show();
  }

  show(status = "") {
    $("ttfa").textContent = this.firstAudioMs === null ? "–" : seconds(this.firstAudioMs);
    $("total").textContent = this.totalMs === null ? "…" : seconds(this.totalMs);
    $("audio-seconds").textContent = this.audioSeconds === null ? "–" : `${this.audioSeconds.toFixed(2)} s`;
    $("voice-used").textContent = this.voice || "–";
    const result = $("result");
    result.dataset.bytes = String(this.bytes);
    if (this.audioSeconds !== null) result.dataset.audioSeconds = this.audioSeconds.toFixed(3);
    if (status) $("status").textContent = status;
  }

  played() {
    $("result").dataset.played = "true";
    this.show("played to the end");
  }
}

function offerDownload(blob, format) {
  const link = $("download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = `speech.${format}`;
}

function showInPlayer(blob) {
  const player = $("player");
  player.onplaying = null;
  player.onended = null;
  if (player.src.startsWith("blob:")) URL.revokeObjectURL(player.src);
  player.src = URL.createObjectURL(blob);
  return player;
}

async function playStreamedSamples(response, outcome, format, sampleRate) {
  // pcm, or the streamed WAV's samples after its header, scheduled chunk by chunk.
  const context = new AudioContext({ sampleRate });
  await context.resume();
  const reader = response.body.getReader();
  const chunks = [];
  let header = format === "wav" ? WAV_HEADER_BYTES : 0;
  let carry = new Uint8Array(0);
  let next = context.currentTime + 0.05;
  let playing = 0;
  let finished = false;
  const ended = () => {
    playing -= 1;
    if (finished && playing === 0) outcome.played();
  };
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    outcome.bytes += value.length;
    let bytes = new Uint8Array(carry.length + value.length);
    bytes.set(carry);
    bytes.set(value, carry.length);
    const skip = Math.min(header, bytes.length);
    header -= skip;
    bytes = bytes.subarray(skip);
    const whole = bytes.length - (bytes.length % 2);
    carry = bytes.slice(whole);
    if (whole === 0) continue;
    const samples = new Int16Array(bytes.slice(0, whole).buffer);
    chunks.push(samples);
    const floats = Float32Array.from(samples, (s) => s / 32768);
    const buffer = context.createBuffer(1, floats.length, sampleRate);
    buffer.copyToChannel(floats, 0);
    const source = context.createBufferSource();
    source.buffer = buffer;
    source.connect(context.destination);
    source.onended = ended;
    next = Math.max(next, context.currentTime);
    source.start(next);
    next += buffer.duration;
    playing += 1;
    outcome.firstAudio();
  }
  finished = true;
  outcome.totalMs = performance.now() - outcome.started;
  const samples = chunks.reduce((n, c) => n + c.length, 0);
  outcome.audioSeconds = samples / sampleRate;
  outcome.show("playing…");
  const clip = wavBlob(chunks, sampleRate);
  offerDownload(clip, "wav");
  showInPlayer(clip); // to play again; not started (Web Audio is playing it)
  if (playing === 0) outcome.played(); // nothing to play (an empty text)
}

async function playWhole(response, outcome, format, sampleRate) {
  const blob = await response.blob();
  outcome.bytes = blob.size;
  outcome.totalMs = performance.now() - outcome.started;
  const header = response.headers.get("X-TTS-Audio-Seconds");
  if (header !== null) outcome.audioSeconds = Number(header);
  offerDownload(blob, format);
  let playable = blob;
  if (format === "pcm") {
    // <audio> cannot play raw samples: wrap them in a WAV header for playing (the download stays pcm).
    const raw = new Int16Array(await blob.arrayBuffer(), 0, Math.floor(blob.size / 2));
    playable = wavBlob([raw], sampleRate);
  }
  const player = showInPlayer(playable);
  player.onplaying = () => outcome.firstAudio();
  player.onended = () => outcome.played();
  outcome.show("playing…");
  await player.play();
}

async function speak(event) {
  event.preventDefault();
  clearError();
  const button = $("speak");
  button.disabled = true;
  const result = $("result");
  delete result.dataset.played;
  delete result.dataset.audioSeconds;
  const player = $("player");
  player.pause();
  player.onended = null;
  const format = $("format").value;
  const stream = $("stream").checked;
  const body = { input: $("text").value, response_format: format, speed: Number($("speed").value) };
  if ($("voice").value) body.voice = $("voice").value;
  if (stream) body.stream = true;
  const started = performance.now();
  try {
    const response = await fetch("/v1/audio/speech", {
      method: "POST",
      headers: authHeaders({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const message = await serviceMessage(response);
      if (response.status === 401) $("key-panel").hidden = false;
      showError(message);
      return;
    }
    const sampleRate = Number(response.headers.get("X-TTS-Sample-Rate")) || 24000;
    const outcome = new Outcome(started, response.headers.get("X-TTS-Voice"));
    result.hidden = false;
    outcome.show("receiving…");
    if (stream && (format === "pcm" || format === "wav")) {
      await playStreamedSamples(response, outcome, format, sampleRate);
    } else {
      await playWhole(response, outcome, format, sampleRate);
    }
  } catch (error) {
    showError(`the request failed: ${error.message || error}`);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("speak-form").addEventListener("submit", speak);
  $("speed").addEventListener("input", () => {
    $("speed-value").textContent = Number($("speed").value).toFixed(2);
  });
  $("api-key").addEventListener("change", loadVoices);
  loadVoices().catch((error) => showError(`could not list voices: ${error.message || error}`));
});

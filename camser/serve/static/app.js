// camser's page: upload a file or record from the microphone → POST v1/predict → bars + timeline.
// No external resources: plain DOM and SVG. Recordings (WebM/Opus in most browsers, which the
// server's libsndfile can't read) are decoded here with the Web Audio API and sent as 16-bit WAV;
// an uploaded file the server refuses as unreadable (415) is converted the same way and resent.
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#d9534f", "#3b7dd8", "#e8a33d", "#6c8a3c", "#8e5bbf", "#2aa39a", "#c2577e",
                   "#7f6a4b", "#4f5d75", "#b8b02f"];
  const RATE = 16000;                 // what the model works at; the server resamples anyway
  const $ = (id) => document.getElementById(id);
  let labels = [];

  // ------------------------------------------------------------------ state (also a test hook)

  const hook = (window.camser = { state: "idle", last: null, error: null });

  function setState(state, text) {
    hook.state = state;
    document.body.dataset.state = state;
    document.body.classList.toggle("busy", state === "busy" || state === "recording");
    const status = $("status");
    status.textContent = text || "";
    status.className = state === "error" ? "error" : "";
    $("record").disabled = state === "busy";
    $("file").disabled = state === "busy" || state === "recording";
  }

  function colour(label) {
    const i = labels.indexOf(label);
    return PALETTE[(i < 0 ? labels.length : i) % PALETTE.length];
  }

  // ------------------------------------------------------------------ audio → 16-bit WAV

  function encodeWav(samples, sampleRate) {
    const n = samples.length;
    const buf = new ArrayBuffer(44 + 2 * n);
    const v = new DataView(buf);
    const text = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
    text(0, "RIFF"); v.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
    text(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
    v.setUint32(24, sampleRate, true); v.setUint32(28, 2 * sampleRate, true);
    v.setUint16(32, 2, true); v.setUint16(34, 16, true);
    text(36, "data"); v.setUint32(40, 2 * n, true);
    for (let i = 0; i < n; i++) {
      const x = Math.max(-1, Math.min(1, samples[i]));
      v.setInt16(44 + 2 * i, x < 0 ? x * 0x8000 : x * 0x7fff, true);
    }
    return new Blob([buf], { type: "audio/wav" });
  }

  async function toWav(blob) {
    // decodeAudioData of an OfflineAudioContext resamples to its rate; channels are averaged
    const Ctx = window.OfflineAudioContext || window.webkitOfflineAudioContext;
    if (!Ctx) throw new Error("this browser can't decode audio (no Web Audio API)");
    const audio = await new Ctx(1, 1, RATE).decodeAudioData(await blob.arrayBuffer());
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const ch = audio.getChannelData(c);
      for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / audio.numberOfChannels;
    }
    return encodeWav(mono, audio.sampleRate);
  }

  // ------------------------------------------------------------------ prediction

  async function post(blob, name) {
    const form = new FormData();
    form.append("file", blob, name);
    const res = await fetch("v1/predict", { method: "POST", body: form });
    let body = null;
    try { body = await res.json(); } catch (e) { /* not JSON */ }
    return { status: res.status, body };
  }

  function detail(r) {
    const d = r.body && r.body.detail;
    if (typeof d === "string") return d;
    if (Array.isArray(d)) return d.map((e) => e.msg).join("; ");
    return "HTTP " + r.status;
  }

  async function predict(blob, name, converted) {
    setState("busy", "Analysing " + name + "…");
    try {
      let r = await post(blob, name);
      if (r.status === 415 && !converted) {        // e.g. m4a/webm: decode here, send WAV
        let wav = null;
        try { wav = await toWav(blob); } catch (e) { /* the browser can't read it either */ }
        if (wav) {
          setState("busy", "Converting " + name + " to WAV…");
          r = await post(wav, name.replace(/\.[^.]*$/, "") + ".wav");
        }
      }
      if (r.status !== 200) throw new Error(detail(r));
      hook.last = r.body;
      render(r.body);
      setState("done", "");
    } catch (e) {
      hook.error = String(e.message || e);
      setState("error", hook.error);
    }
  }

  // ------------------------------------------------------------------ drawing

  function el(tag, attrs, parent, text) {
    const node = document.createElementNS(SVG, tag);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function render(p) {
    if (!labels.length) labels = Object.keys(p.probabilities);
    $("result").hidden = false;
    $("label").textContent = p.label;
    $("label").style.color = colour(p.label);
    $("confidence").textContent = "(" + (100 * p.probabilities[p.label]).toFixed(1) + " %)";
    const dur = p.segments.length ? p.segments[p.segments.length - 1].end_s : 0;
    $("meta").textContent = p.path + " · " + dur.toFixed(1) + " s · " + p.segments.length +
      " segment" + (p.segments.length === 1 ? "" : "s");
    drawBars(p.probabilities);
    drawTimeline(p.segments, dur);
    const legend = $("legend");
    legend.textContent = "";
    for (const lab of Object.keys(p.probabilities)) {
      const item = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = colour(lab);
      item.appendChild(sw);
      item.appendChild(document.createTextNode(lab));
      legend.appendChild(item);
    }
  }

  function drawBars(probs) {
    const svg = $("bars");
    svg.textContent = "";
    const names = Object.keys(probs);
    const W = 600, row = 26, left = 70, right = 60, h = names.length * row;
    svg.setAttribute("viewBox", `0 0 ${W} ${h}`);
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
    svg.style.height = h + "px";
    names.forEach((lab, i) => {
      const y = i * row, w = (W - left - right) * probs[lab];
      el("text", { x: left - 8, y: y + 17, "text-anchor": "end" }, svg, lab);
      el("rect", { x: left, y: y + 4, width: W - left - right, height: row - 8, fill: "#eef1f5", rx: 3 }, svg);
      el("rect", { class: "bar", "data-label": lab, "data-p": probs[lab].toFixed(4), x: left, y: y + 4,
                   width: Math.max(0, w).toFixed(2), height: row - 8, fill: colour(lab), rx: 3 }, svg);
      el("text", { x: left + Math.max(0, w) + 6, y: y + 17 }, svg, (100 * probs[lab]).toFixed(1) + " %");
    });
  }

  function drawTimeline(segments, dur) {
    const svg = $("timeline");
    svg.textContent = "";
    const W = 600, H = 200, L = 34, R = 10, T = 22, B = 24, band = 12;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
    svg.style.height = H + "px";
    if (!segments.length || dur <= 0) return;
    const x = (t) => L + (W - L - R) * t / dur;
    const y = (p) => T + band + 6 + (H - T - B - band - 6) * (1 - p);
    // axes and grid
    for (const p of [0, 0.5, 1]) {
      el("line", { class: "axis", x1: L, x2: W - R, y1: y(p), y2: y(p) }, svg);
      el("text", { x: L - 6, y: y(p) + 4, "text-anchor": "end" }, svg, p.toFixed(1));
    }
    const step = niceStep(dur);
    for (let t = 0; t <= dur + 1e-9; t += step) {
      el("text", { x: x(t), y: H - 6, "text-anchor": "middle" }, svg, t.toFixed(step < 1 ? 1 : 0) + " s");
    }
    // a band of each segment's label on top …
    segments.forEach((s, i) => {
      const r = el("rect", { class: "seg", "data-label": s.label, "data-index": i, x: x(s.start_s), y: T - 4,
                             width: Math.max(1, x(s.end_s) - x(s.start_s) - 1), height: band,
                             fill: colour(s.label) }, svg);
      el("title", {}, r, `${s.start_s.toFixed(1)}–${s.end_s.toFixed(1)} s: ${s.label} ` +
                           `(${(100 * s.probabilities[s.label]).toFixed(1)} %)`);
    });
    // … and each label's probability as a step line over the segments
    for (const lab of Object.keys(segments[0].probabilities)) {
      const pts = [];
      for (const s of segments) {
        pts.push(`${x(s.start_s).toFixed(1)},${y(s.probabilities[lab]).toFixed(1)}`);
        pts.push(`${x(s.end_s).toFixed(1)},${y(s.probabilities[lab]).toFixed(1)}`);
      }
      el("polyline", { class: "line", "data-label": lab, points: pts.join(" "), fill: "none",
                       stroke: colour(lab), "stroke-width": 2 }, svg);
    }
  }

  function niceStep(dur) {
    for (const s of [0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600]) if (dur / s <= 8) return s;
    return 7200;
  }

  // ------------------------------------------------------------------ inputs

  $("file").addEventListener("change", (ev) => {
    const f = ev.target.files && ev.target.files[0];
    if (!f) return;
    showPlayer(f);
    predict(f, f.name, false);
    ev.target.value = "";
  });

  let recorder = null;
  $("record").addEventListener("click", async () => {
    if (recorder && recorder.state === "recording") { recorder.stop(); return; }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      setState("error", "recording needs a browser with MediaRecorder and a secure (https or localhost) page");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (e) {
      setState("error", "no microphone: " + (e.message || e.name));
      return;
    }
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      $("record").classList.remove("recording");
      $("record").textContent = "● Record";
      const raw = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
      try {
        setState("busy", "Converting the recording to WAV…");
        const wav = await toWav(raw);
        showPlayer(wav);
        await predict(wav, "recording.wav", true);
      } catch (e) {
        setState("error", "could not decode the recording: " + (e.message || e));
      }
    };
    recorder.start();
    $("record").classList.add("recording");
    $("record").textContent = "■ Stop";
    setState("recording", "Recording… press Stop when done.");
  });

  function showPlayer(blob) {
    const player = $("player");
    if (player.src) URL.revokeObjectURL(player.src);
    player.src = URL.createObjectURL(blob);
    player.hidden = false;
  }

  fetch("v1/model").then((r) => r.json()).then((m) => {
    labels = m.labels;
    $("model").textContent = `Model: ${m.labels.join(", ")} · ${m.backend}` +
      (m.onnx && m.onnx.quantize ? " (" + m.onnx.quantize + ")" : "") +
      ` · ${m.segment_s} s segments · uploads up to ${(m.max_upload_bytes / 1048576).toFixed(0)} MB`;
  }).catch(() => { $("model").textContent = "the model description could not be loaded"; });

  hook.encodeWav = encodeWav;
  hook.toWav = toWav;
  hook.predict = predict;
  setState("idle", "");
})();

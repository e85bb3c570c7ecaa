"""A small synthetic corpus in IEMOCAP's exact layout, for tests, demos and benchmarks.

Nothing here is real speech, but it is built like speech so that the whole pipeline (reader,
segmentation, MFCC/spectrogram/SSL features, models) sees realistic inputs: a glottal-pulse
source with jitter, a cascade of formant resonators that move from syllable to syllable,
consonant-like noise bursts, a syllable-rate amplitude envelope, pauses and a noise floor.

Emotion changes the prosody the way acted emotional speech tends to (pitch level and range,
speaking rate, loudness, spectral tilt through the glottal open quotient), enough for a
simple classifier to learn it; each speaker has their own pitch, vocal-tract length and voice
quality (female voices higher), and every utterance draws its own random variation.

Everything is drawn from ``numpy.random.default_rng`` seeded per utterance, so the same
``seed`` writes the same bytes whatever the order of generation.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

# Per speaker, labels follow this cycle (shuffled): 16 turns → neu 4, ang 3, sad 3, hap 2,
# exc 2, fru 1, xxx 1, i.e. 14 turns in the default 4-class set (exc merged into hap).
LABEL_CYCLE = ["neu", "ang", "sad", "hap", "exc", "neu", "ang", "sad",
               "neu", "exc", "hap", "fru", "neu", "ang", "sad", "xxx"]


@dataclass(frozen=True)
class Prosody:
    """How an emotion is spoken. ``f0`` multiplies the speaker's pitch, ``range_st`` is the
    pitch excursion in semitones, ``rate`` syllables per second, ``gain`` the peak level,
    ``open_quotient`` the open fraction of the glottal cycle (higher → steeper spectral tilt,
    softer voice), ``breath`` the aspiration noise level, ``f1`` scales the first formant
    (more open mouth when aroused)."""

    f0: float
    range_st: float
    rate: float
    gain: float
    open_quotient: float
    breath: float
    f1: float


PROSODY = {
    "ang": Prosody(f0=1.30, range_st=3.0, rate=5.6, gain=0.80, open_quotient=0.35, breath=0.02, f1=1.15),
    "hap": Prosody(f0=1.40, range_st=7.0, rate=4.6, gain=0.50, open_quotient=0.50, breath=0.03, f1=1.08),
    "exc": Prosody(f0=1.50, range_st=8.0, rate=5.0, gain=0.60, open_quotient=0.45, breath=0.03, f1=1.10),
    "neu": Prosody(f0=1.00, range_st=2.0, rate=4.0, gain=0.30, open_quotient=0.60, breath=0.03, f1=1.00),
    "sad": Prosody(f0=0.82, range_st=1.0, rate=2.7, gain=0.12, open_quotient=0.80, breath=0.10, f1=0.92),
    "fru": Prosody(f0=1.10, range_st=3.0, rate=4.8, gain=0.50, open_quotient=0.45, breath=0.05, f1=1.05),
    "xxx": Prosody(f0=1.10, range_st=4.0, rate=4.3, gain=0.40, open_quotient=0.55, breath=0.04, f1=1.03),
}

# F1, F2, F3 (Hz) of a few vowels (adult male; scaled per speaker) and their bandwidths.
_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480]], float)
_BANDWIDTHS = np.array([90.0, 110.0, 170.0])

# What the annotators write for each majority label (EmoEvaluation ``C-`` lines) and a typical
# valence/activation/dominance (1–5 scales).
_WORDS = {"ang": "Anger", "hap": "Happiness", "exc": "Excited", "neu": "Neutral", "sad": "Sadness",
          "fru": "Frustration", "xxx": "Other"}
_VAD = {"ang": (1.5, 4.0, 4.0), "hap": (4.0, 3.0, 3.0), "exc": (4.0, 4.0, 3.5), "neu": (3.0, 2.5, 2.5),
        "sad": (1.5, 2.0, 2.0), "fru": (2.0, 3.5, 3.0), "xxx": (2.5, 3.0, 3.0)}
_FILLER = ("i", "you", "we", "the", "it", "was", "just", "think", "know", "that", "what", "there",
           "really", "going", "now", "here", "said", "about", "this", "well")
_CUES = {"ang": ("ridiculous", "stop", "unbelievable"), "hap": ("great", "wonderful", "love"),
         "exc": ("amazing", "wow", "finally"), "sad": ("sorry", "miss", "lost"),
         "neu": ("okay", "tomorrow", "then"), "fru": ("again", "whatever", "why"), "xxx": ("maybe", "hmm", "so")}


@dataclass(frozen=True)
class Voice:
    """A speaker: mean pitch (Hz), vocal-tract scale (formants ×), glottal tilt offset."""

    f0_hz: float
    formant_scale: float
    open_quotient_shift: float


def _voice(rng: np.random.Generator, gender: str) -> Voice:
    base_f0, base_scale = (210.0, 1.15) if gender == "F" else (115.0, 1.0)
    return Voice(f0_hz=base_f0 * float(np.exp(rng.normal(0, 0.08))),
                 formant_scale=base_scale * float(np.exp(rng.normal(0, 0.03))),
                 open_quotient_shift=float(rng.normal(0, 0.03)))


def _resonate(x: np.ndarray, freq_hz: float, bandwidth_hz: float, sr: int) -> np.ndarray:
    """Klatt's second-order resonator (unity gain at 0 Hz)."""
    r = np.exp(-np.pi * bandwidth_hz / sr)
    c = 2 * r * np.cos(2 * np.pi * min(freq_hz, 0.45 * sr) / sr)
    return lfilter([1 - c + r * r], [1, -c, r * r], x)


def _smooth(x: np.ndarray, time_constant_s: float, sr: int) -> np.ndarray:
    """Two passes of a one-pole low-pass: turns step-wise per-syllable targets into glides."""
    a = np.exp(-1.0 / (time_constant_s * sr))
    y = lfilter([1 - a], [1, -a], x, zi=[x[0] * a])[0]
    return lfilter([1 - a], [1, -a], y, zi=[y[0] * a])[0]


def synthesize(label: str, voice: Voice, rng: np.random.Generator, duration_s: float,
               sr: int = 16_000) -> np.ndarray:
    """One utterance of ``duration_s`` seconds spoken by ``voice`` with ``label``'s prosody,
    as float32 in [-1, 1]."""
    p = PROSODY[label]
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr

    # Syllables: gamma-distributed lengths at the emotion's rate; some are pauses.
    rate = p.rate * np.exp(rng.normal(0, 0.1))
    lengths = rng.gamma(8.0, 1.0 / (8.0 * rate), size=int(duration_s * rate * 2) + 4)
    lead = rng.uniform(0.08, 0.2)
    onsets = lead + np.concatenate([[0.0], np.cumsum(lengths)[:-1]])
    voiced = rng.random(len(lengths)) > 0.12
    voiced[0] = True
    loud = rng.uniform(0.6, 1.0, len(lengths))
    accent = rng.normal(0, 1.0, len(lengths))
    vowel = rng.integers(0, len(_VOWELS), len(lengths))
    syl = np.clip(np.searchsorted(onsets, t, side="right") - 1, 0, len(lengths) - 1)
    pos = np.clip((t - onsets[syl]) / lengths[syl], 0.0, 1.0)
    speaking = (t >= lead) & (t < duration_s - rng.uniform(0.08, 0.2))
    envelope = np.sin(np.pi * pos) ** 0.7 * loud[syl] * voiced[syl] * speaking

    # Pitch: declination + smoothed per-syllable accents, scaled to the emotion's range.
    contour = 0.6 - 1.2 * t / duration_s + 0.8 * _smooth(accent[syl], 0.04, sr)
    f0 = voice.f0_hz * p.f0 * np.exp(rng.normal(0, 0.05)) * 2 ** (p.range_st / 12 * contour)
    f0 *= 1 + 0.01 * rng.standard_normal(n)  # jitter
    phase = np.cumsum(f0) / sr % 1.0

    # Rosenberg glottal pulse; its derivative (lip radiation) excites the vocal tract.
    oq = float(np.clip(p.open_quotient + voice.open_quotient_shift + rng.normal(0, 0.03), 0.2, 0.9))
    rise = 0.6 * oq
    pulse = np.where(phase < rise, 0.5 * (1 - np.cos(np.pi * phase / rise)),
                     np.where(phase < oq, np.cos(0.5 * np.pi * (phase - rise) / (oq - rise)), 0.0))
    source = np.diff(pulse, prepend=pulse[0]) * 20.0
    source += p.breath * rng.standard_normal(n) * pulse  # aspiration, gated by the glottis

    # Vocal tract: every vowel's formant cascade, cross-faded from syllable to syllable.
    speech = np.zeros(n)
    for v, formants in enumerate(_VOWELS):
        weight = _smooth((vowel[syl] == v).astype(float), 0.02, sr)
        if not weight.any():
            continue
        y = source
        for k, (f, b) in enumerate(zip(formants, _BANDWIDTHS)):
            scale = voice.formant_scale * (p.f1 if k == 0 else 1.0)
            y = _resonate(y, f * scale, b, sr)
        speech += weight * y
    speech *= envelope

    # Consonant-like bursts at syllable onsets: short, decaying, high-passed noise.
    since_onset = t - onsets[syl]
    burst = np.exp(-since_onset / 0.015) * (since_onset < 0.05) * voiced[syl] * speaking
    speech += 0.08 * np.max(np.abs(speech)) * burst * np.diff(rng.standard_normal(n + 1))

    peak = np.max(np.abs(speech)) or 1.0
    y = speech / peak * p.gain * np.exp(rng.normal(0, 0.15))
    y += 10 ** (-55 / 20) * rng.standard_normal(n)  # room noise, never digital silence
    return np.clip(y, -0.99, 0.99).astype(np.float32)


def _sentence(rng: np.random.Generator, label: str) -> str:
    words = list(rng.choice(_FILLER, size=int(rng.integers(3, 9))))
    if rng.random() < 0.6:
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_CUES[label])))
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


def _annotations(rng: np.random.Generator, label: str, speaker_letter: str) -> list[str]:
    """The per-annotator lines that follow a label line (categorical C-, dimensional A-)."""
    names = ["Anger", "Happiness", "Excited", "Neutral", "Sadness", "Frustration"]
    votes = [_WORDS[label]] * 2 if label != "xxx" else list(rng.choice(names, size=2, replace=False))
    votes.append(str(rng.choice(names)) if label == "xxx" else _WORDS[label])
    lines = [f"C-E{i + 1}:\t{v};\t()" for i, v in enumerate(votes)]
    lines.append(f"C-{speaker_letter}1:\t{_WORDS[label]};\t()")
    vad = _VAD[label]
    for who in ("A-E1", "A-E2", f"A-{speaker_letter}1"):
        v, a, d = (int(np.clip(round(x + rng.normal(0, 0.6)), 1, 5)) for x in vad)
        lines.append(f"{who}:\tval {v}; act {a}; dom  {d};\t()")
    return lines


def generate_iemocap(root: str | Path, n_sessions: int = 3, utterances_per_speaker: int = 16,
                     seed: int = 0, sr: int = 16_000) -> Path:
    """Write ``root/IEMOCAP_full_release`` with ``n_sessions`` sessions of two speakers (F and M)
    and return that folder (what :func:`camser.corpora.iemocap.scan` takes).

    Each session has an improvised dialog (``SesNNF_impro01``) and a scripted one
    (``SesNNM_script01_1``); each speaker has ``utterances_per_speaker`` turns split between
    them, labelled by :data:`LABEL_CYCLE`, 1.5–7 s long, as 16-bit wav at ``sr`` Hz. Besides
    the label, transcript and wav files it writes an annotator-vote file in ``Categorical/``
    and a macOS ``._`` file in ``EmoEvaluation/`` (readers must ignore both).
    """
    out = Path(root) / "IEMOCAP_full_release"
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.txt").write_text(
        f"Synthetic corpus in the IEMOCAP_full_release layout, written by camser.corpora.synthetic "
        f"(seed={seed}, sessions={n_sessions}, turns per speaker={utterances_per_speaker}, sr={sr}).\n"
        "Not speech: harmonic source + formant filters with emotion-dependent prosody.\n")
    for s in range(1, n_sessions + 1):
        _write_session(out, s, utterances_per_speaker, seed, sr)
    return out


def _write_session(out: Path, s: int, per_speaker: int, seed: int, sr: int) -> None:
    ses = f"Ses{s:02d}"
    session_dir = out / f"Session{s}"
    label_dir = session_dir / "dialog" / "EmoEvaluation"
    (label_dir / "Categorical").mkdir(parents=True, exist_ok=True)
    (session_dir / "dialog" / "transcriptions").mkdir(parents=True, exist_ok=True)
    dialogs = [f"{ses}F_impro01", f"{ses}M_script01_1"]

    # Each speaker's labels (a shuffled cycle) split between the two dialogs.
    turns: dict[str, list[tuple[str, str]]] = {d: [] for d in dialogs}  # dialog → [(letter, label)]
    for g, letter in enumerate("FM"):
        rng = np.random.default_rng([seed, s, g])
        labels = [LABEL_CYCLE[i % len(LABEL_CYCLE)] for i in range(per_speaker)]
        labels = [labels[i] for i in rng.permutation(per_speaker)]
        half = (per_speaker + 1) // 2
        turns[dialogs[0]] += [(letter, lab) for lab in labels[:half]]
        turns[dialogs[1]] += [(letter, lab) for lab in labels[half:]]
    voices = {letter: _voice(np.random.default_rng([seed, s, g, 1]), letter) for g, letter in enumerate("FM")}

    for d_index, dialog in enumerate(dialogs):
        wav_dir = session_dir / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True, exist_ok=True)
        # Alternate the speakers' turns like a conversation: F000, M000, F001, ...
        by_letter = {L: [lab for who, lab in turns[dialog] if who == L] for L in "FM"}
        order = [(L, i) for i in range(max(map(len, by_letter.values()))) for L in "FM" if i < len(by_letter[L])]
        label_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        transcript_lines, categorical_lines = [], []
        clock = 2.0 + d_index
        for k, (letter, i) in enumerate(order):
            label = by_letter[letter][i]
            utt = f"{dialog}_{letter}{i:03d}"
            rng = np.random.default_rng([seed, s, d_index, "FM".index(letter), i, 7])
            duration_s = float(rng.uniform(1.5, 7.0))
            y = synthesize(label, voices[letter], rng, duration_s, sr)
            sf.write(wav_dir / f"{utt}.wav", y, sr, subtype="PCM_16")
            start, end = clock, clock + len(y) / sr
            clock = end + float(rng.uniform(0.3, 1.5))
            vad = ", ".join(f"{x:.4f}" for x in _VAD[label])
            label_lines += [f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[{vad}]",
                            *_annotations(rng, label, letter), ""]
            transcript_lines.append(f"{utt} [{start:08.4f}-{end:08.4f}]: {_sentence(rng, label)}")
            if k == 2:
                transcript_lines.append(f"{letter}: [LAUGHTER]")  # a non-turn line, as in the release
            categorical_lines.append(f"{utt} :{_WORDS[label]}; ()")
        (label_dir / f"{dialog}.txt").write_text("\n".join(label_lines) + "\n")
        (session_dir / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(transcript_lines) + "\n")
        (label_dir / "Categorical" / f"{dialog}_e1_cat.txt").write_text("\n".join(categorical_lines) + "\n")
    # A macOS AppleDouble file next to the label files: binary, with a copy of a label line.
    first = dialogs[0]
    (label_dir / f"._{first}.txt").write_bytes(
        b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        \x00\x02\n"
        + f"[1.0000 - 2.0000]\t{first}_F000\tsad\t[2.0, 2.0, 2.0]\n".encode() + b"\x00" * 16)

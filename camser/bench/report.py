"""bench.md: the targets (met / missed) first, then every figure in tables."""
from __future__ import annotations


def _fmt(x, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{max(1, digits - 1)}f}"
    return str(x)


def _status(entry) -> str:
    return entry.get("status", "—") if isinstance(entry, dict) else "—"


def _ok(entry) -> bool:
    return _status(entry) == "ok"


def render_markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# camser benchmark", ""]
    if r.get("quick"):
        lines += ["> **Quick run** (`--quick`): tiny sizes and models, a smoke test of the benchmark "
                  "itself. These figures say nothing about speed and are not comparable with the targets.", ""]
    lines += [f"- command: `{r.get('command')}`",
              f"- date: {r['date']}, {r.get('duration_s')} s",
              f"- machine: {m.get('cpu_model')}, {m.get('cpu_cores')} cores ({m.get('cpu_cores_usable')} usable), "
              f"{m.get('memory_gb')} GB RAM, torch threads {m.get('torch_threads')}, "
              f"load average {m.get('load_average_start')} → {m.get('load_average_end')}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items()
                                          if v and k != "platform"),
              f"- GPU: {m.get('cuda_device') or 'none'}", ""]

    lines += ["## Targets", "", "| target | measured | required | status |", "|---|---|---|---|"]
    for t in r["targets"]:
        lines.append(f"| {t['what']} | {_fmt(t['value'], 4)} {t['unit'] if t['value'] is not None else ''} | "
                     f"{t['op']} {_fmt(t['threshold'])} {t['unit']} | {t['status']} |")
    lines.append("")

    meas = r["measurements"]
    feats = meas.get("features", {})
    if feats:
        lines += ["## Feature extraction", "",
                  "Real-time factor (RTF) = compute seconds per second of audio; 3 s segments.", "",
                  "| features | device / setting | batch | segments/s | RTF |", "|---|---|---|---|---|"]
        for name, e in feats.items():
            if not _ok(e):
                lines.append(f"| {name} | {_status(e)} | | | |")
                continue
            settings = e.get("settings") or {e.get("device", "cpu"): e.get("batches", [])}
            for setting, rows in settings.items():
                for row in rows:
                    lines.append(f"| {name} | {e.get('device', 'cpu')} {setting if setting != e.get('device') else ''} | "
                                 f"{row['batch_size']} | {_fmt(row['segments_per_s'])} | {_fmt(row['rtf'], 4)} |")
        lines.append("")
        for name, e in feats.items():
            if _ok(e) and "mkldnn" in e:
                per = ", ".join(f"batch {p['batch_size']}: {p['faster']} (off/on time {p['off_over_on']})"
                                for p in e["mkldnn"]["per_batch_size"])
                lines.append(f"- {name} ({e['encoder']}): oneDNN **{e['mkldnn']['faster']}** is faster — {per}")
        lines.append("")

    train = meas.get("training", {})
    if any(n not in ("cv_ratio", "train_data") for n in train):
        lines += ["## Training", "", "Epoch: the mean over the timed epochs; warm: without the first, which also "
                  "pages the feature stores in from disk.", "",
                  "| measurement | SSL frames | segments | epoch (s) | how | peak private MiB |",
                  "|---|---|---|---|---|---|"]
        for name, e in train.items():
            if name in ("cv_ratio", "train_data"):
                continue
            if not _ok(e):
                lines.append(f"| {name} | {_status(e)} | | | | |")
                continue
            how = "extrapolated from timed steps" if e.get("extrapolated") else f"{e.get('epochs_timed')} epochs timed"
            shape = e.get("ssl_shape") or ("from audio" if "encoder" in e else "")
            epoch = _fmt(e.get("epoch_s")) + (f" (warm {_fmt(e['warm_epoch_s'])})" if e.get("warm_epoch_s") else "")
            lines.append(f"| {name} | {shape} | {e.get('n_train_segments')} | {epoch} | {how} | "
                         f"{_fmt(e.get('process', {}).get('peak_private_mb'))} |")
        lines.append("")
    if train:
        data = train.get("train_data", {})
        if _ok(data):
            for sname, s in data.get("stores", {}).items():
                lines.append(f"- synthetic store {sname}: {s['shape']} {s['dtype']}, {s['size_gb']} GB — {s.get('status')}")
            lines.append("")
        cv = train.get("cv_ratio", {})
        if _ok(cv):
            lines += [f"Full {cv['folds']}-fold CV, {cv['epochs_per_fold']} epochs per fold: encoder recomputed and "
                      f"fine-tuned every epoch {_fmt(cv['finetune_cv_s'])} s; one-time wav2vec2-base extraction "
                      f"{_fmt(cv.get('extraction_s'))} s.", "",
                      "| cached variant | CV (s) | speed-up | speed-up per epoch (no extraction) |", "|---|---|---|---|"]
            for v, x in cv["variants"].items():
                lines.append(f"| {v} | {_fmt(x['cached_cv_s'])} | {_fmt(x['ratio'])}× | {_fmt(x['ratio_without_extraction'])}× |")
            lines += ["", f"Assumptions: {cv['assumptions']}.", ""]
        elif cv:
            lines += [f"CV ratio: {_status(cv)}", ""]

    inf = meas.get("inference", {})
    if inf:
        lines += ["## Inference", ""]
        for name, e in inf.items():
            if not _ok(e):
                lines.append(f"- {name}: {_status(e)}")
                continue
            if name.startswith("predict"):
                extra = ""
                if "mkldnn_off" in e:
                    extra += f"; oneDNN off RTF {_fmt(e['mkldnn_off']['rtf'], 4)}"
                if isinstance(e.get("cli"), dict) and "rtf" in e["cli"]:
                    extra += f"; `camser predict` command incl. start-up {_fmt(e['cli']['wall_s'])} s (RTF {_fmt(e['cli']['rtf'], 4)})"
                lines.append(f"- {name} ({e['device']}, {e['audio_s']} s audio, {e['encoder']}): RTF "
                             f"**{_fmt(e['rtf'], 4)}** (first call {_fmt(e['rtf_first_call'], 4)}), model load "
                             f"{_fmt(e['load_s'])} s{extra}")
            elif name == "int8_ua":
                v = e["variants"]
                lines.append(f"- int8 accuracy ({e['experiment']}; {e['n_test_utterances']} test utterances): UA "
                             + ", ".join(f"{k} {_fmt(100 * x['ua'])} %" for k, x in v.items())
                             + f"; int8 − fp32: UA **{_fmt(100 * e['ua_change_int8_vs_fp32'])}** points, "
                             f"same prediction for {_fmt(100 * e['prediction_agreement_int8_vs_fp32'])} % of files")
            else:
                for v, x in e.get("variants", {}).items():
                    lines.append(f"- {name} {v}: RTF {_fmt(x['rtf'], 4)} (max |Δp| vs PyTorch "
                                 f"{_fmt(x.get('max_abs_diff_vs_torch'))})")
        lines.append("")

    pm = meas.get("peak_memory", {})
    lines += ["## Peak memory", "", f"Scope: {pm.get('scope')}.", "",
              "| measurement | peak private (RssAnon) MiB | peak RSS incl. mapped stores (VmHWM) MiB |",
              "|---|---|---|"]
    for name, p in pm.get("per_measurement", {}).items():
        lines.append(f"| {name} | {_fmt(p['peak_private_mb'])} | {_fmt(p['peak_rss_mb'])} |")
    lines.append("")
    not_ok = [(g, n, _status(e)) for g in ("features", "training", "inference")
              for n, e in meas.get(g, {}).items() if not _ok(e)]
    if not_ok:
        lines += ["## Not measured", ""] + [f"- {g}/{n}: {s}" for g, n, s in not_ok] + [""]
    return "\n".join(lines)

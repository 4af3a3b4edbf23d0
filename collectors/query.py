"""The one query language every source shares, and its translations to each API's own syntax.

Grammar (what a brand's ``query:`` holds)::

    "Acme Live" OR acmelive -jobs lang:en

* whitespace-separated terms must all appear (AND);
* ``OR`` (uppercase, on its own) separates alternative groups; AND binds tighter than OR, as on X;
* ``"quoted phrase"`` matches the words in order with any whitespace between them;
* ``-term`` / ``-"phrase"`` excludes, whatever group matched (``a OR b -jobs`` = ``(a OR b) -jobs``);
* ``lang:xx`` keeps only posts in that language (where the source tells the language).

APIs only pre-filter: every source re-checks each post with :meth:`Query.matches`, because their
matching is looser than ours (stemming, links, usernames) and the brand "Apple" must not count
"apple pie" when the config excludes it.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

# X's recent-search limit for the ``query`` parameter (standard / pay-per-use access).
# https://docs.x.com/x-api/posts/search/integrate/build-a-query
X_MAX_QUERY_LENGTH = 512

_LANG_RE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})?", re.IGNORECASE)

# Scripts written without spaces between words: a word boundary means nothing there, so a term in
# them matches as a plain substring ("東京" must count "東京タワー").
_NO_SPACE_SCRIPTS = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)


class QueryError(ValueError):
    """The query text cannot be parsed (or cannot be expressed in a source's syntax).

    Always a configuration mistake, so collectors report it as a permanent source error."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        return self.message


def _normalise(text: str) -> str:
    # NFKC folds compatibility forms (full-width letters, ligatures) so they match their plain
    # spelling; casefold is the Unicode-correct lower() ("STRASSE" == "straße"), but it can leave
    # a decomposed sequence ("ΐ" -> "ΐ"), so the result is normalised again (Unicode's
    # "compatibility caseless matching", chapter 3.13).
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _needs_boundary(char: str) -> bool:
    return (char.isalnum() or char == "_") and not _NO_SPACE_SCRIPTS.match(char)


@dataclass(frozen=True)
class Term:
    text: str
    phrase: bool  # was quoted in the query

    def pattern(self) -> str:
        """The regex source matching this term in normalised (casefolded) text."""
        words = _normalise(self.text).split()
        body = r"\s+".join(re.escape(w) for w in words)
        # Lookarounds rather than \b: they do the right thing when the term itself starts or ends
        # with a non-word character ("#acme", "c++"), and "#acme" / "@acme" in a post contain the
        # word "acme" because "#" and "@" are not word characters.
        head = r"(?<!\w)" if _needs_boundary(words[0][0]) else ""
        tail = r"(?!\w)" if _needs_boundary(words[-1][-1]) else ""
        return head + body + tail

    def quoted(self) -> str:
        return f'"{self.text}"' if self.phrase else self.text


@dataclass(frozen=True)
class Query:
    any_of: tuple[tuple[Term, ...], ...]  # OR of groups; each group is an AND of positive terms
    none_of: tuple[Term, ...] = ()  # exclusions, applied to every group
    lang: str | None = None  # optional language filter (lang:en)
    # Compiled once per Query, lazily; excluded from eq/hash/repr so queries still compare by value.
    _compiled: list = field(default_factory=list, init=False, repr=False, compare=False, hash=False)

    # -- matching ---------------------------------------------------------------------------
    def _regexes(self) -> tuple[re.Pattern[str], re.Pattern[str] | None, list[list[re.Pattern[str]]]]:
        if not self._compiled:
            unique = list(dict.fromkeys(t for group in self.any_of for t in group))
            # One alternation over every positive term: most posts in a feed match nothing, and
            # one scan rejects them without running each term's regex.
            any_term = re.compile("|".join(t.pattern() for t in unique))
            excluded = (
                re.compile("|".join(t.pattern() for t in self.none_of)) if self.none_of else None
            )
            per_term = {t: re.compile(t.pattern()) for t in unique}
            groups = [[per_term[t] for t in group] for group in self.any_of]
            self._compiled.append((any_term, excluded, groups))
        return self._compiled[0]

    def matches(self, text: str) -> bool:
        """Does this post text satisfy the query (ignoring ``lang``, see :meth:`accepts_lang`)?"""
        any_term, excluded, groups = self._regexes()
        norm = _normalise(text)
        if any_term.search(norm) is None:
            return False
        if excluded is not None and excluded.search(norm) is not None:
            return False
        return any(all(rx.search(norm) for rx in group) for group in groups)

    def accepts_lang(self, lang: str | None) -> bool:
        """Does a post in ``lang`` pass the language filter?  An unknown language passes: sources
        that do not tell the language must not lose every post."""
        if self.lang is None or not lang:
            return True
        return lang.casefold().split("-")[0] == self.lang.casefold().split("-")[0]

    # -- translations -----------------------------------------------------------------------
    def to_plain_terms(self) -> list[str]:
        """Every positive term (phrases as their words), unique, in query order: for sources that
        search one keyword at a time (hashtag timelines, simple keyword APIs)."""
        return list(dict.fromkeys(t.text for group in self.any_of for t in group))

    def to_x(self) -> str:
        """X API v2 search syntax.  X binds AND tighter than OR, like us; exclusions apply to the
        whole OR so the alternatives are parenthesised when there are several.
        https://docs.x.com/x-api/posts/search/integrate/build-a-query"""
        groups = [" ".join(_x_term(t) for t in group) for group in self.any_of]
        if len(groups) > 1:
            groups = [f"({g})" if len(grp) > 1 else g for g, grp in zip(groups, self.any_of)]
        positive = " OR ".join(groups)
        if len(self.any_of) > 1 and (self.none_of or self.lang):
            positive = f"({positive})"
        parts = [positive] + ["-" + _x_term(t) for t in self.none_of]
        if self.lang:
            parts.append(f"lang:{self.lang}")
        text = " ".join(parts)
        if len(text) > X_MAX_QUERY_LENGTH:
            raise QueryError(
                f"query is {len(text)} characters in X syntax; X accepts at most {X_MAX_QUERY_LENGTH}"
            )
        return text

    def to_reddit(self) -> str:
        """Reddit search (Lucene-style: uppercase AND / OR / NOT, quotes, parentheses).  Reddit has
        no language filter: ``lang`` is left to the local re-check."""
        groups = [" AND ".join(_quote_if_needed(t) for t in group) for group in self.any_of]
        if len(groups) > 1:
            groups = [f"({g})" if len(grp) > 1 else g for g, grp in zip(groups, self.any_of)]
        positive = " OR ".join(groups)
        if self.none_of and (len(self.any_of) > 1 or len(self.any_of[0]) > 1):
            positive = f"({positive})"
        return " ".join([positive] + [f"NOT {_quote_if_needed(t)}" for t in self.none_of])

    def to_google_news(self) -> str:
        """Google News search.  Google binds OR *tighter* than AND (``a b OR c`` = ``a (b OR c)``),
        so multi-word groups are parenthesised; ``-term`` excludes.  The language is chosen by the
        feed's ``hl``/``ceid`` parameters rather than in the query."""
        groups = [" ".join(_quote_if_needed(t) for t in group) for group in self.any_of]
        if len(groups) > 1:
            groups = [f"({g})" if len(grp) > 1 else g for g, grp in zip(groups, self.any_of)]
        return " ".join([" OR ".join(groups)] + ["-" + _quote_if_needed(t) for t in self.none_of])

    def __str__(self) -> str:
        groups = [" ".join(t.quoted() for t in group) for group in self.any_of]
        parts = [" OR ".join(groups)] + ["-" + t.quoted() for t in self.none_of]
        if self.lang:
            parts.append(f"lang:{self.lang}")
        return " ".join(parts)


def _quote_if_needed(term: Term) -> str:
    # A bare word with punctuation an API could read as an operator (":" "(" "|" ...) is quoted.
    if term.phrase or not re.fullmatch(r"[\w#@$.'&+-]+", term.text):
        return f'"{term.text}"'
    return term.text


def _x_term(term: Term) -> str:
    return _quote_if_needed(term)


# -- parsing ------------------------------------------------------------------------------------
def parse_query(text: str) -> Query:
    """Parse the query language; raise :class:`QueryError` naming the position of the problem."""
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty query: give at least one term")
    groups: list[list[Term]] = [[]]
    excluded: list[Term] = []
    lang: str | None = None
    last_or: int | None = None  # position of an OR not yet followed by a term
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        start = i
        negate = c == "-"
        if negate:
            i += 1
            if i >= n or text[i].isspace():
                raise QueryError(f"'-' at position {start + 1} is not followed by a term to exclude", start)
        if text[i] == '"':
            close = text.find('"', i + 1)
            if close == -1:
                raise QueryError(f"unbalanced quote: the '\"' at position {i + 1} is never closed", i)
            phrase = " ".join(text[i + 1 : close].split())
            if not phrase:
                raise QueryError(f'empty phrase "" at position {i + 1}', i)
            term = Term(phrase, True)
            i = close + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] != '"':
                j += 1
            word = text[i:j]
            i = j
            if word == "OR" and not negate:
                if last_or is not None or not groups[-1]:
                    raise QueryError(f"dangling OR at position {start + 1}: it needs a term on both sides", start)
                last_or = start
                groups.append([])
                continue
            if word.lower().startswith("lang:"):
                code = word[5:]
                if negate:
                    raise QueryError(f"'-lang:' at position {start + 1}: a language can only be required", start)
                if not _LANG_RE.fullmatch(code):
                    raise QueryError(f"'{word}' at position {start + 1} is not a language code like lang:en", start)
                if lang is not None and lang != code.lower():
                    raise QueryError(f"second language filter '{word}' at position {start + 1}: give one lang:", start)
                lang = code.lower()
                continue
            if "(" in word or ")" in word:
                raise QueryError(
                    f"parentheses at position {start + 1} are not supported: write groups as"
                    " 'a b OR c d' (AND binds tighter than OR) or quote the text",
                    start,
                )
            term = Term(word, False)
        if not any(_normalise(term.text).strip()):
            raise QueryError(f"term at position {start + 1} is empty after normalisation", start)
        if negate:
            excluded.append(term)
        else:
            groups[-1].append(term)
            last_or = None
    if last_or is not None:
        raise QueryError(f"dangling OR at position {last_or + 1}: it needs a term on both sides", last_or)
    if not any(groups):
        raise QueryError("query has only exclusions (or a language): give at least one term to look for")
    return Query(
        any_of=tuple(tuple(g) for g in groups),
        none_of=tuple(dict.fromkeys(excluded)),
        lang=lang,
    )

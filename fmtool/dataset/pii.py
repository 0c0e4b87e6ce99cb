"""Personal data in text: detection with checksums, and redaction that keeps NER tags aligned.

Detection uses Presidio's pattern recognizers, which validate what a regular expression alone cannot:
e-mail addresses (a real top-level domain, from tldextract's bundled suffix list, never fetched), phone numbers
(parsed per region by phonenumbers), credit-card numbers (Luhn), IBANs (mod-97), IP addresses, US social
security numbers (invalid area/group/serial ranges rejected). fmtool adds URLs carrying credentials
(scheme://user:password@host) and API keys and secrets in the published formats of their issuers. Overlapping
detections keep the highest score (then the longest). Person names need a model: see fmtool/audit/pii.py.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Sequence

from fmtool.dataset.examples import Example, TokenExample
from fmtool.errors import FmtoolError

# the pattern-based types, in the order the report lists them
PATTERN_TYPES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "IBAN_CODE",
    "IP_ADDRESS",
    "US_SSN",
    "URL_CREDENTIALS",
    "SECRET",
)
# formats published by the issuers (AWS, GitHub, Slack, Google, Stripe, OpenAI-style keys), PEM private keys, JWTs
_SECRETS = {
    "aws_access_key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "github_token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    "slack_token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b",
    "google_api_key": r"\bAIza[0-9A-Za-z_\-]{35}\b",
    "stripe_key": r"\b[rs]k_live_[0-9a-zA-Z]{24,}\b",
    "sk_api_key": r"\bsk-[A-Za-z0-9_\-]{20,}\b",
    "private_key": r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----",
    "jwt": r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
}
_URL_CREDENTIALS = r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s:/@]+:[^\s/@]+@[^\s/]+"
# below this many texts per core a worker process costs more than it saves
_TEXTS_PER_WORKER = 1000


@dataclass(frozen=True)
class PiiSpan:
    kind: str
    start: int
    end: int
    score: float


@lru_cache(maxsize=8)
def _recognizers(types: tuple[str, ...], phone_regions: tuple[str, ...]) -> list:
    from presidio_analyzer import Pattern, PatternRecognizer
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    class OfflineEmailRecognizer(EmailRecognizer):
        # Presidio's own check fetches the public suffix list; the snapshot inside tldextract is enough
        def validate_result(self, pattern_text: str) -> bool:
            return _domains()(pattern_text).fqdn != ""

    built = {
        "EMAIL_ADDRESS": lambda: OfflineEmailRecognizer(),
        # strict grouping: on news text the default (valid numbers) also takes sports scores and price tables
        "PHONE_NUMBER": lambda: PhoneRecognizer(supported_regions=phone_regions, leniency=2),
        "CREDIT_CARD": lambda: CreditCardRecognizer(),
        "IBAN_CODE": lambda: IbanRecognizer(),
        "IP_ADDRESS": lambda: IpRecognizer(),
        "US_SSN": lambda: UsSsnRecognizer(),
        "URL_CREDENTIALS": lambda: PatternRecognizer(
            "URL_CREDENTIALS", patterns=[Pattern("url_credentials", _URL_CREDENTIALS, 1.0)]
        ),
        "SECRET": lambda: PatternRecognizer(
            "SECRET", patterns=[Pattern(name, regex, 0.9) for name, regex in _SECRETS.items()]
        ),
    }
    return [built[t]() for t in types]


@lru_cache(maxsize=1)
def _domains():
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class PiiScanner:
    """Finds personal data of `types` in text; a type's score must reach its threshold; allow-listed values are
    ignored."""

    def __init__(
        self,
        types: Sequence[str] = PATTERN_TYPES,
        *,
        min_score: float = 0.4,
        thresholds: Optional[dict[str, float]] = None,
        phone_regions: Sequence[str] = ("US", "GB", "DE", "FR", "IN", "CA"),
        allow_list: Sequence[str] = (),
        key: str = "pii",
    ) -> None:
        unknown = [t for t in types if t not in PATTERN_TYPES]
        if unknown:
            raise FmtoolError(f"{key}: unknown PII type '{unknown[0]}'; choose from: {', '.join(PATTERN_TYPES)}")
        self.types, self.min_score, self.thresholds = tuple(types), min_score, dict(thresholds or {})
        self.phone_regions = tuple(r.upper() for r in phone_regions)
        self.allowed = {a.lower() for a in allow_list}

    def scan(self, text: str) -> list[PiiSpan]:
        found = []
        for recognizer in _recognizers(self.types, self.phone_regions):
            for result in recognizer.analyze(text, recognizer.supported_entities, None):
                span = PiiSpan(result.entity_type, result.start, result.end, float(result.score))
                if (
                    span.score >= self.thresholds.get(span.kind, self.min_score)
                    and text[span.start : span.end].lower() not in self.allowed
                ):
                    found.append(span)
        return _without_overlaps(found)

    def scan_all(self, texts: Sequence[str]) -> list[list[PiiSpan]]:
        """scan() of every text, in order; a long list is shared among the CPU's cores, because the phone matcher
        (phonenumbers, tried per region on every digit run) is pure Python and holds one core."""
        workers = min(os.cpu_count() or 1, len(texts) // _TEXTS_PER_WORKER)
        if workers < 2 or sys.platform != "linux":  # fork, so the workers inherit the recognizers built here
            return [self.scan(text) for text in texts]
        _recognizers(self.types, self.phone_regions)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(self.scan, texts, chunksize=math.ceil(len(texts) / (4 * workers))))


def _without_overlaps(spans: list[PiiSpan]) -> list[PiiSpan]:
    kept: list[PiiSpan] = []
    for span in sorted(spans, key=lambda s: (-s.score, -(s.end - s.start), s.start)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: s.start)


def placeholder(kind: str) -> str:
    return f"<{kind}>"


def redact_text(text: str, spans: Sequence[PiiSpan]) -> str:
    for span in sorted(spans, key=lambda s: -s.start):
        text = text[: span.start] + placeholder(span.kind) + text[span.end :]
    return text


def text_of(example: Example) -> str:
    """The text a scan reads: an NER sentence's words joined by single spaces (so offsets map back to words)."""
    if isinstance(example, TokenExample):
        return " ".join(example.tokens)
    return example.text if example.text_pair is None else f"{example.text}\n{example.text_pair}"


def redact(example: Example, spans: Sequence[PiiSpan]) -> Example:
    """The example with each detected span replaced by its type's placeholder; an NER word touched by a span
    becomes the placeholder and keeps its tag, so the tag sequence is unchanged."""
    if not spans:
        return example
    if isinstance(example, TokenExample):
        tokens, start = list(example.tokens), 0
        for index, word in enumerate(example.tokens):
            end = start + len(word)
            hit = next((s for s in spans if s.start < end and s.end > start), None)
            if hit is not None:
                tokens[index] = placeholder(hit.kind)
            start = end + 1
        return replace(example, tokens=tokens)
    if example.text_pair is None:
        return replace(example, text=redact_text(example.text, spans))
    cut = len(example.text) + 1
    return replace(
        example,
        text=redact_text(example.text, [s for s in spans if s.end <= len(example.text)]),
        text_pair=redact_text(
            example.text_pair, [replace(s, start=s.start - cut, end=s.end - cut) for s in spans if s.start >= cut]
        ),
    )


def redact_examples(examples: Sequence[Example], scanner: PiiScanner) -> tuple[list[Example], dict[str, int]]:
    """The examples with their personal data redacted, and how many spans of each type were replaced."""
    counts: dict[str, int] = {}
    out = []
    for example, spans in zip(examples, scanner.scan_all([text_of(e) for e in examples])):
        for span in spans:
            counts[span.kind] = counts.get(span.kind, 0) + 1
        out.append(redact(example, spans))
    return out, counts

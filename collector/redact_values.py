"""Secrets recognisable by their shape alone, wherever they appear in an argument.

The patterns are ported from detect-secrets 1.5 (Yelp, Apache-2.0:
plugins/aws.py, github_token.py, gitlab_token.py, slack.py, stripe.py,
jwt.py, private_key.py, sendgrid.py, npm.py, pypi_token.py, openai.py,
mailchimp.py, discord.py, telegram_token.py, square_oauth.py, twilio.py,
artifactory.py, azure_storage_key.py, high_entropy_strings.py), with a few
newer token formats from gitleaks' default rules (MIT: github_pat_, Google
API keys and OAuth tokens, Anthropic/OpenAI project keys, DigitalOcean,
Tailscale, HashiCorp Vault, Sentry, Pulumi, Hugging Face, Grafana, Shopify,
npm, RubyGems, Postman, Atlassian). Ported rather than imported, measured in
one run on tests/data/redact_corpus.txt (`python -m tests.bench.redaction
--detect-secrets`): each argument through its 27 plugins costs ~350 µs per
argv (its ad-hoc `scan_line` ~1.2 ms per line, and it flags every word
there) against ~10-50 µs for the whole redactor, and finds 22% of the
corpus's secrets (it reports, it does not say what to mask in a flag or a
header); it also brings `requests`, global settings and 0.2 s of imports.

Left out: detect-secrets' keyword-context detectors (IBM, Cloudant,
SoftLayer; argv names are handled by collector/redact_names.py), its
Artifactory `AP...` form (matches ordinary words) and verification calls.
The high-entropy check is detect-secrets' Shannon entropy with its base64
limit (4.5), on runs of 32+ base64 characters mixing cases and digits; hex
runs are left alone because in command lines they are mostly hashes and
commit ids (a hex secret is still caught by the name before it).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Final

MASK: Final = "***"

# Each alternative masks the group named s<N> if it has one, else the whole match.
# Every alternative starts with a literal character: then `re` skips ahead to
# the next possible first character instead of trying ~40 branches at every
# position (31 µs -> under 1 µs on a 22-character path).
_SHAPES: Final = [
    # AWS access key ids (detect-secrets aws.py)
    r"A(?:3T[A-Z0-9]|BIA|CCA|KIA|SIA)[0-9A-Z]{16}",
    # GitHub (github_token.py; fine-grained PATs from gitleaks)
    r"gh[pousr]_[A-Za-z0-9_]{36,255}",
    r"github_pat_[A-Za-z0-9_]{22,255}",
    # GitLab (gitlab_token.py)
    r"gl(?:pat|dt|ft|soat|rt)-[A-Za-z0-9_\-]{20,50}(?!\w)",
    r"GR1348941[A-Za-z0-9_\-]{20,50}(?!\w)",
    r"glcbt-(?:[0-9a-fA-F]{2}_)?[A-Za-z0-9_\-]{20,50}(?!\w)",
    r"gl(?:imt|ptt|agent|oas)-[A-Za-z0-9_\-]{25,1024}(?!\w)",
    # Slack tokens and webhooks (slack.py): the webhook's last part is the secret
    r"xox[abposr]-(?:\d+-)+[A-Za-z0-9]+",
    r"hooks\.slack\.com/(?:services|workflows)/T[A-Za-z0-9_]+/[AB][A-Za-z0-9_]+/(?P<s1>[A-Za-z0-9_]+)",
    # Discord webhooks (gitleaks)
    r"discord(?:app)?\.com/api/webhooks/\d+/(?P<s2>[A-Za-z0-9_\-]{20,})",
    # Stripe (stripe.py; test keys too: they still open the account's test data)
    r"rk_(?:live|test)_[0-9a-zA-Z]{24,}",
    r"sk_(?:live|test)_[0-9a-zA-Z]{24,}",
    # JSON Web Tokens (jwt.py, without its base64/JSON validation: eyJ is '{"')
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*",
    # Private keys (private_key.py): what follows the header
    r"-----BEGIN[A-Z0-9 ]{0,30} PRIVATE KEY(?: BLOCK)?-----(?P<s3>.*?)(?=-----END|$)",
    r"PuTTY-User-Key-File-\d: *(?P<s4>.*)",
    # SendGrid, Twilio, Square, Azure storage (sendgrid.py, twilio.py, square_oauth.py,
    # azure_storage_key.py)
    r"SG\.[a-zA-Z0-9_-]{22}\.[a-zA-Z0-9_-]{43}\b",
    r"AC[a-f0-9]{32}\b",
    r"SK[a-f0-9]{32}\b",
    r"sq0(?:csp|atp)-[0-9A-Za-z_\-]{22,43}",
    r"AccountKey=(?P<s5>[a-zA-Z0-9+/=]{88})",
    # npm, PyPI, OpenAI/Anthropic, Google, Vault, DigitalOcean, Tailscale, others (gitleaks)
    r"npm_[A-Za-z0-9]{36}\b",
    r"pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,}",
    r"sk-(?:proj|svcacct|admin|ant-(?:api|admin|sid)\d\d)-[A-Za-z0-9_-]{20,}",
    r"sk-[A-Za-z0-9_-]*[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}",
    r"AIza[0-9A-Za-z_-]{35}",
    r"ya29\.[0-9A-Za-z_-]{20,}",
    r"hv[sbr]\.[A-Za-z0-9_-]{24,}",
    r"do[por]_v1_[a-f0-9]{64}\b",
    r"tskey-[a-z]+-[A-Za-z0-9-]{10,}",
    r"sntry[su]_[A-Za-z0-9+/=_-]{32,}",
    r"pul-[a-f0-9]{40}\b",
    r"hf_[A-Za-z]{34}\b",
    r"gl(?:sa|c)_[A-Za-z0-9_+/=-]{32,}",
    r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
    r"rubygems_[a-f0-9]{48}\b",
    r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}\b",
    r"ATATT3[A-Za-z0-9_\-=]{150,}",
    # Telegram bot tokens (telegram_token.py): the part after the bot id
    r":(?<=[0-9]{8}:)(?P<s6>AA[0-9A-Za-z_-]{33})",
]
_SHAPE = re.compile("|".join(f"(?:{p})" for p in _SHAPES), re.DOTALL)
_GROUPS: Final = tuple(f"s{n}" for n in range(1, 7))
# Shapes that cannot start with a literal, each behind a substring it must hold:
# Mailchimp (mailchimp.py), Discord bot tokens (discord.py), Artifactory (artifactory.py).
_ODD: Final = (
    ("-us", re.compile(r"\b[0-9a-f]{32}-us[0-9]{1,2}\b")),
    (".", re.compile(r"[MNO][a-zA-Z\d_-]{23,25}\.[a-zA-Z\d_-]{6}\.[a-zA-Z\d_-]{27}\b")),
    ("AKC", re.compile(r"(?:^|(?<=[\s=:\"]))AKC[a-zA-Z0-9]{10,}(?=[\s\"]|$)")),
)

# Runs of base64 (standard or URL-safe) long enough to be keys.
_B64_RUN = re.compile(r"[A-Za-z0-9+/_=-]{32,}")
_HEX = re.compile(r"[0-9a-fA-F_=-]+")
# a word (or camelCase words) between slashes
_PATH_PART = re.compile(r"(?:^|/)[A-Za-z][a-z]{2,}(?:[A-Z][a-z]{2,})*(?:/|$)")
ENTROPY_LIMIT: Final = 4.5  # detect-secrets' default for base64 strings


def shannon_entropy(text: str) -> float:
    """Bits per character (detect-secrets' calculate_shannon_entropy)."""
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in Counter(text).values())


def _looks_random(run: str) -> bool:
    if _HEX.fullmatch(run) or ("/" in run and _PATH_PART.search(run)):
        return False  # hashes, commit and image ids; paths
    if not (any(c.isupper() for c in run) and any(c.islower() for c in run)
            and any(c.isdigit() for c in run)):
        return False
    return shannon_entropy(run) >= ENTROPY_LIMIT


def mask_group(m: re.Match[str], group: str, mask: str = MASK) -> str:
    """The matched text with one group of it replaced by `mask`."""
    start, end = m.span(group)
    base = m.start()
    text = m.group(0)
    return text[: start - base] + mask + text[end - base:]


def _mask_shape(m: re.Match[str]) -> str:
    for g in _GROUPS:
        if m.group(g) is not None:
            return mask_group(m, g)
    return MASK


def _mask_run(m: re.Match[str]) -> str:
    return MASK if _looks_random(m.group(0)) else m.group(0)


def mask_shapes(text: str) -> str:
    """`text` with every value-shaped secret (and high-entropy base64 run) masked."""
    text = _SHAPE.sub(_mask_shape, text)
    for hint, pattern in _ODD:
        if hint in text:
            text = pattern.sub(MASK, text)
    if len(text) >= 32:
        text = _B64_RUN.sub(_mask_run, text)
    return text


def looks_like_token(text: str) -> bool:
    """A credential-looking string where a user name could stand (`https://TOKEN@host`)."""
    return (len(text) >= 16 and any(c.isdigit() for c in text)
            and any(c.isalpha() for c in text)) or mask_shapes(text) != text

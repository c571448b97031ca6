"""Every language a customer can choose has a template for every event, and the notification
model accepts exactly those languages."""

from __future__ import annotations

from meterdesk.notifications import model
from meterdesk.notifications.model import EventKind
from meterdesk.notifications.rendering import TEMPLATE_DIR
from meterdesk.sites.model import DEFAULT_LANGUAGE, Language


def test_customer_languages_are_the_notification_languages() -> None:
    assert tuple(language.value for language in Language) == model.LANGUAGES
    assert DEFAULT_LANGUAGE.value == model.DEFAULT_LANGUAGE


def test_every_customer_language_has_a_template_for_every_event() -> None:
    for language in Language:
        for kind in EventKind:
            template = TEMPLATE_DIR / language.value / f"{model.template_key(kind)}.txt.j2"
            assert template.is_file(), template

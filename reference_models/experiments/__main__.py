"""``python -m reference_models.experiments``: print the generated guide page."""

from .page import page_text

print(page_text(), end="")

"""Moved to switchyard/money.py (money is core: every app renders it). This alias keeps imports that
still name billing.money working while they move; new code imports switchyard.money."""

from switchyard.money import (
    MAX_UNITS as MAX_UNITS,
)
from switchyard.money import (
    PER_MILLION as PER_MILLION,
)
from switchyard.money import (
    PICO as PICO,
)
from switchyard.money import (
    UNITS_PER_USD as UNITS_PER_USD,
)
from switchyard.money import (
    cents_str as cents_str,
)
from switchyard.money import (
    from_units as from_units,
)
from switchyard.money import (
    json_default as json_default,
)
from switchyard.money import (
    json_number as json_number,
)
from switchyard.money import (
    per_million_to_per_token as per_million_to_per_token,
)
from switchyard.money import (
    price_str as price_str,
)
from switchyard.money import (
    to_units as to_units,
)

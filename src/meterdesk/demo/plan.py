"""The sample property, as plain data: rooms, tenants, meters, tariffs and credit.

Everything comes from one seeded ``random.Random``, so every run builds the same property:
a shopping street (35 shops, six big ones on three-phase meters with CT 5, four restaurants
with a water meter too), two apartment blocks (60 flats, a few with a water meter) and an
office floor (6 offices) — 101 rooms, one account each. Most accounts start rich; a few start
nearly empty so they run into arrears during the demo, one may overdraw by 50.00, and two
tenants never come to the desk while the demo runs. Then three water-only rooms whose accounts
buy m³ rather than money (quantity credit, 购量): a public laundry that uses its first m³ up in
the first night and buys more at the desk, and two drinks stalls that run out on the third day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal

SEED = 2026
ORGANISATION = "示例物业 Demo Property"
SITE = "示例广场 Demo Plaza"
TIMEZONE = "Asia/Shanghai"

RESIDENTIAL = "居民分时阶梯 Residential TOU+tier"
COMMERCIAL = "商业分时 Commercial TOU"
WATER = "阶梯水价 Water tiered"

CENT = Decimal("0.01")


@dataclass(frozen=True)
class MeterPlan:
    number: str
    utility: str  # electricity | water
    kind: str  # single_phase | three_phase | water
    tariff: str
    ct: int
    load_per_hour: Decimal  # primary kWh or m³ per hour at full activity
    start_total: Decimal  # register at opening


@dataclass(frozen=True)
class TenantPlan:
    account: str  # A-0001
    building: str
    floor: str
    level: int
    room: str
    kind: str  # shop | apartment | office
    area_m2: str
    label: str  # "Shop A-105", as the live view names the room
    customer: str
    phone: str
    profile: str  # load profile: shop | restaurant | apartment | office | public
    meters: tuple[MeterPlan, ...]
    credit: Decimal
    overdraft: Decimal = Decimal(0)
    pays_after_hours: int | None = 3  # hours in arrears before the tenant comes to the desk
    recharge: Decimal = Decimal(200)
    method: str = "cash"
    credit_unit: str = "money"  # or "quantity": the account buys m³ (购量), one meter only


@dataclass(frozen=True)
class VacantPlan:
    """A room with its meters installed but no tenant yet: for the newcomer to open an account
    in the console (开户), or one click away when its tenant was pre-entered (预录入)."""

    building: str
    floor: str
    level: int
    room: str
    kind: str
    area_m2: str
    profile: str  # the standby load of an empty room
    meters: tuple[MeterPlan, ...]
    preset: tuple[str, str, str, Decimal] | None = None  # account, customer, phone, credit


@dataclass(frozen=True)
class Building:
    name: str
    floors: tuple[tuple[str, int], ...]  # (name, level)


BUILDINGS = (
    Building("A 商业街 Shopping Street", (("1F", 1), ("2F", 2))),
    Building("B1 公寓 Apartments", tuple((f"{n}F", n) for n in range(2, 7))),
    Building("B2 公寓 Apartments", tuple((f"{n}F", n) for n in range(2, 7))),
    Building("C 写字楼 Offices", (("10F", 10),)),
)

SURNAMES = "张王李刘陈杨赵黄周吴徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹"
GIVEN = "伟芳娜敏静磊洋勇艳杰军涛明超霞平刚丽强婷鹏辉玲华晨宇欣琳浩雪"
ENGLISH = (
    "Emma Wilson",
    "Lucas Martin",
    "Olivia Brown",
    "Noah Schmidt",
    "Sofia Rossi",
    "Daniel Kim",
    "Hannah Müller",
    "Ahmed Hassan",
    "Chloe Dubois",
    "Mateo García",
    "Priya Sharma",
    "James O'Connor",
)
SHOPS = (
    "老王面馆 Wang's Noodles",
    "鲜果坊 Fresh Fruit",
    "蓝莲花咖啡 Blue Lotus Café",
    "百味川菜 Sichuan Kitchen",
    "明亮眼镜 Bright Optics",
    "小熊童装 Little Bear Kids",
    "悦读书店 Joy Books",
    "好运便利店 Lucky Mart",
    "花语花店 Flower Talk",
    "快剪理发 QuickCut",
    "晨光文具 Morning Stationery",
    "点心铺 Dim Sum House",
)


class _Names:
    """Distinct tenant names: mostly Chinese, some English, shops sometimes by trade name."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()
        self._english = list(ENGLISH)
        self._shops = list(SHOPS)
        rng.shuffle(self._english)
        rng.shuffle(self._shops)

    def person(self) -> str:
        if self._english and self._rng.random() < 0.15:
            return self._english.pop()
        while True:
            name = self._rng.choice(SURNAMES) + "".join(
                self._rng.choices(GIVEN, k=self._rng.choice((1, 1, 2)))
            )
            if name not in self._used:
                self._used.add(name)
                return name

    def shop(self) -> str:
        if self._shops and self._rng.random() < 0.35:
            return self._shops.pop()
        return self.person()


# Mobile prefixes of the three networks, all in use: any 8 digits after them make a valid number
# (a plain "1" + 10 random digits was invalid one time in twelve — 140…, 154…, 179…, 194… — and
# customers' numbers are checked on entry now, shared/contacts.py).
_MOBILE_PREFIXES = ("130", "131", "135", "136", "138", "139", "150", "158", "186", "189")


def _phone(rng: random.Random) -> str:
    return f"+86{rng.choice(_MOBILE_PREFIXES)}{rng.randint(0, 99_999_999):08d}"


def _money(rng: random.Random, low: int, high: int, step: int = 100) -> Decimal:
    return Decimal(rng.randrange(low, high + 1, step))


def _register(rng: random.Random, high: int = 9000) -> Decimal:
    """A register at opening as the meter shows it: DL/T 645 energy and CJ/T 188 volume have two
    decimal places (100.00 .. ``high``). An opening reading finer than the register would make
    the meter's first reading look lower than it (quarantined as a decrease)."""
    return Decimal(rng.randint(1_000_000, high * 10_000)).scaleb(-4).quantize(CENT, ROUND_DOWN)


class _Counter:
    def __init__(self) -> None:
        self.accounts = 0
        self.electricity = 0
        self.water = 0

    def account(self) -> str:
        self.accounts += 1
        return f"A-{self.accounts:04d}"

    def meter(self, utility: str) -> str:
        if utility == "water":
            self.water += 1
            return f"W-{self.water:03d}"
        self.electricity += 1
        return f"E-{self.electricity:03d}"


def build_vacancies(tenants: list[TenantPlan], seed: int = SEED) -> list[VacantPlan]:
    """Two empty offices and an empty flat, their meters numbered after the tenants'; one office
    and the flat have their new tenant pre-entered."""
    rng = random.Random(seed + 7)  # noqa: S311 — sample data; apart, so the tenants stay the same
    counter = _Counter()
    utilities = [meter.utility for tenant in tenants for meter in tenant.meters]
    counter.electricity, counter.water = utilities.count("electricity"), utilities.count("water")
    offices = BUILDINGS[3]
    flats = BUILDINGS[1]
    return [
        VacantPlan(
            offices.name, "10F", 10, "C-1007", "office", "120", "office",
            (_electricity(rng, counter, COMMERCIAL, "0.3"),),
            ("A-0102", "星河科技 Galaxy Tech", "13912345678", Decimal(3000)),
        ),
        VacantPlan(
            offices.name, "10F", 10, "C-1008", "office", "95", "office",
            (_electricity(rng, counter, COMMERCIAL, "0.3"),),
        ),
        VacantPlan(
            flats.name, "6F", 6, "B1-607", "apartment", "52", "apartment",
            (_electricity(rng, counter, RESIDENTIAL, "0.1"),),
            ("A-0103", "赵雪", "13698765432", Decimal(300)),
        ),
    ]  # fmt: skip


def build_plan(seed: int = SEED) -> list[TenantPlan]:
    rng = random.Random(seed)  # noqa: S311 — sample data, not security
    names, counter = _Names(rng), _Counter()
    tenants = _shops(rng, names, counter)
    for building in BUILDINGS[1:3]:
        tenants += _apartments(rng, names, counter, building)
    tenants += _offices(rng, names, counter)
    tenants = _make_some_poor(rng, tenants)
    # drawn last, so every draw above (and the rooms it gave) stays as it was before them
    return tenants + _quantity_rooms(rng, counter)


def _electricity(
    rng: random.Random, counter: _Counter, tariff: str, load: str, *, ct: int = 1
) -> MeterPlan:
    kind = "three_phase" if ct > 1 else "single_phase"
    number = counter.meter("electricity")
    return MeterPlan(number, "electricity", kind, tariff, ct, Decimal(load), _register(rng))


def _water(rng: random.Random, counter: _Counter, load: str) -> MeterPlan:
    number = counter.meter("water")
    return MeterPlan(number, "water", "water", WATER, 1, Decimal(load), _register(rng, 900))


def _shop_fitout(
    rng: random.Random, counter: _Counter, kind: str
) -> tuple[int, str, Decimal, tuple[MeterPlan, ...]]:
    """Area, load profile, initial credit and meters of a big shop, a restaurant or a shop."""
    if kind == "big":
        meter = _electricity(rng, counter, COMMERCIAL, "28", ct=5)
        return rng.randrange(180, 420, 10), "shop", _money(rng, 15000, 30000), (meter,)
    if kind == "restaurant":
        meters = (_electricity(rng, counter, COMMERCIAL, "9"), _water(rng, counter, "0.45"))
        return rng.randrange(60, 140, 5), "restaurant", _money(rng, 3000, 6000), meters
    meter = _electricity(rng, counter, COMMERCIAL, str(rng.choice((3, 4, 5, 6))))
    return rng.randrange(25, 90, 5), "shop", _money(rng, 1500, 5000), (meter,)


def _shops(rng: random.Random, names: _Names, counter: _Counter) -> list[TenantPlan]:
    building = BUILDINGS[0]
    rooms = [(f"A-1{n:02d}", "1F", 1) for n in range(1, 21)]
    rooms += [(f"A-2{n:02d}", "2F", 2) for n in range(1, 16)]
    big = set(rng.sample(range(len(rooms)), 6))
    restaurants = set(rng.sample(sorted(set(range(len(rooms))) - big), 4))
    tenants = []
    for index, (room, floor, level) in enumerate(rooms):
        kind = "big" if index in big else "restaurant" if index in restaurants else "shop"
        area, profile, credit, meters = _shop_fitout(rng, counter, kind)
        tenants.append(
            TenantPlan(
                counter.account(),
                building.name,
                floor,
                level,
                room,
                "shop",
                str(area),
                f"Shop {room}",
                names.shop(),
                _phone(rng),
                profile,
                meters,
                credit,
                recharge=Decimal(rng.choice((500, 1000, 2000))),
                method=rng.choice(("cash", "card", "wechat", "alipay", "transfer")),
            )
        )
    return tenants


def _apartments(
    rng: random.Random, names: _Names, counter: _Counter, building: Building
) -> list[TenantPlan]:
    prefix = building.name.split()[0]
    tenants = []
    for floor, level in building.floors:
        for door in range(1, 7):
            room = f"{prefix}-{level}{door:02d}"
            meters = [_electricity(rng, counter, RESIDENTIAL, rng.choice(("1.0", "1.3", "1.6")))]
            if prefix == "B2" and door == 1 and level <= 5:
                meters.append(_water(rng, counter, "0.06"))
            tenants.append(
                TenantPlan(
                    counter.account(),
                    building.name,
                    floor,
                    level,
                    room,
                    "apartment",
                    str(rng.choice((38, 45, 52, 60, 75, 89))),
                    f"Apt {room}",
                    names.person(),
                    _phone(rng),
                    "apartment",
                    tuple(meters),
                    _money(rng, 200, 800, 50),
                    recharge=Decimal(rng.choice((100, 200, 300))),
                    method=rng.choice(("cash", "wechat", "wechat", "alipay")),
                )
            )
    return tenants


def _offices(rng: random.Random, names: _Names, counter: _Counter) -> list[TenantPlan]:
    building = BUILDINGS[3]
    tenants = []
    for door in range(1, 7):
        room = f"C-10{door:02d}"
        tenants.append(
            TenantPlan(
                counter.account(),
                building.name,
                "10F",
                10,
                room,
                "office",
                str(rng.randrange(80, 260, 10)),
                f"Office {room}",
                names.shop() if rng.random() < 0.5 else names.person(),
                _phone(rng),
                "office",
                (_electricity(rng, counter, COMMERCIAL, str(rng.choice((5, 7, 9)))),),
                _money(rng, 2000, 6000),
                recharge=Decimal(1000),
                method="transfer",
            )
        )
    return tenants


def _make_some_poor(rng: random.Random, tenants: list[TenantPlan]) -> list[TenantPlan]:
    """Nearly empty accounts, so the demo shows arrears, an overdraft and the desk at work."""
    shops = [i for i, t in enumerate(tenants) if t.profile == "shop" and t.meters[0].ct == 1]
    flats = [i for i, t in enumerate(tenants) if t.profile == "apartment"]
    restaurants = [i for i, t in enumerate(tenants) if t.profile == "restaurant"]
    offices = [i for i, t in enumerate(tenants) if t.profile == "office"]
    poor = {
        **{i: (Decimal(rng.choice((15, 20, 30, 45))), 1) for i in rng.sample(shops, 4)},
        **{i: (Decimal(rng.choice((6, 9, 12, 15))), 5) for i in rng.sample(flats, 4)},
        rng.choice(restaurants): (Decimal(40), 1),
        rng.choice(offices): (Decimal(35), 6),
    }
    never = rng.sample(sorted(poor), 2)
    overdraft = rng.choice([i for i in flats if i not in poor])
    changed = list(tenants)
    for index, (credit, hours) in poor.items():
        pays = None if index in never else hours + rng.randint(0, 3)
        changed[index] = replace(tenants[index], credit=credit, pays_after_hours=pays)
    changed[overdraft] = replace(
        tenants[overdraft], credit=Decimal(5), overdraft=Decimal(50), pays_after_hours=12
    )
    return changed


# Account numbers after the two the vacancies' pre-entered tenants took (A-0102, A-0103).
FIRST_QUANTITY_ACCOUNT = 104


@dataclass(frozen=True)
class QuantityRoom:
    room: str
    building: int  # index in BUILDINGS
    floor: str
    level: int
    kind: str
    label: str
    customer: str
    flow: str  # rated m³ per hour
    profile: str
    credit: int  # first purchase at opening, CNY
    pays_after_hours: int
    recharge: int


QUANTITY_ROOMS = (
    # The laundry runs most at night ("public" profile): its first 10.00 (2.89 m³) run out
    # before dawn on the first day whatever the weekday, and it buys more as soon as the desk
    # opens; 50.00 then cross the water tariff's 15 m³ block, so its lots carry two prices.
    QuantityRoom("B2-207", 2, "2F", 2, "public", "Room B2-207", "公共洗衣房 Laundry", "1.8",
                 "public", 10, 1, 50),
    # On 2F, apart from 1F's that tests/browser/screenshots.py adds to a copy.
    QuantityRoom("A-216", 0, "2F", 2, "shop", "Stall A-216", "鲜榨果汁 Juice Bar", "0.12",
                 "shop", 10, 2, 30),
    QuantityRoom("A-217", 0, "2F", 2, "shop", "Stall A-217", "奶茶小站 Tea Stall", "0.10",
                 "shop", 8, 3, 30),
)  # fmt: skip


def _quantity_rooms(rng: random.Random, counter: _Counter) -> list[TenantPlan]:
    """Water-only rooms on quantity credit (购量): their wallets hold what their m³ cost, their
    alarms and their valve go by the m³ left."""
    counter.accounts = FIRST_QUANTITY_ACCOUNT - 1
    return [
        TenantPlan(
            counter.account(),
            BUILDINGS[room.building].name,
            room.floor,
            room.level,
            room.room,
            room.kind,
            str(rng.choice((20, 25, 30))),
            room.label,
            room.customer,
            _phone(rng),
            room.profile,
            (_water(rng, counter, room.flow),),
            Decimal(room.credit),
            pays_after_hours=room.pays_after_hours,
            recharge=Decimal(room.recharge),
            method=rng.choice(("cash", "wechat", "alipay")),
            credit_unit="quantity",
        )
        for room in QUANTITY_ROOMS
    ]

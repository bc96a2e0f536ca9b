"""A small relevance set for the knowledge base's search: a bank's help articles in Chinese and
English, and questions as customers and agents phrase them, each with the one article that
answers it. Written before the ranking was tuned, and not changed to suit it."""

# ruff: noqa: RUF001 - Chinese text uses its own (full-width) punctuation.

from __future__ import annotations

# key: (title, body, tags)
ARTICLES: dict[str, tuple[str, str, list[str]]] = {
    "card-expiry": (
        "Card expiry: getting your replacement card",
        "Your card expires at the end of the month printed on its front. We mail a replacement "
        "card 30 days before the expiry date to your billing address. Activate the new card in "
        "the app; the old card stops working when it expires.",
        ["cards"],
    ),
    "refunds": (
        "Refunds for card purchases",
        "When a merchant refunds a purchase, the money returns to your card within 7 to 10 "
        "business days. If the merchant refuses a refund, you can open a dispute from the "
        "transaction in the app.",
        ["billing"],
    ),
    "password-reset": (
        "Reset your online banking password",
        "Forgot your password? Tap 'Forgot password' on the sign-in page, enter the code we send "
        "by SMS, then choose a new password of at least 12 characters that you have not used "
        "before.",
        ["security"],
    ),
    "lost-card": (
        "Report a lost or stolen card",
        "Freeze the card in the app at once, then report it lost or stolen. We block it for good "
        "and send a new one within five days. Purchases you did not make can be disputed.",
        ["cards", "security"],
    ),
    "foreign-fees": (
        "Foreign transaction fees",
        "Purchases in a foreign currency, or from a merchant abroad, carry a 1.5% fee on the "
        "converted amount. Our travel card has no such fee.",
        ["fees"],
    ),
    "credit-limit": (
        "Raise your credit limit",
        "After six months of on-time payments you can ask for a higher credit limit in the app. "
        "We answer within two business days and may ask for proof of income.",
        ["credit"],
    ),
    "zh-card-expiry": (
        "信用卡到期换卡",
        "您的信用卡到期前30天，我们会把新卡寄到您的账单地址。收到新卡后请在手机银行激活，"
        "旧卡在有效期当月月底停止使用。",
        ["信用卡"],
    ),
    "zh-refunds": (
        "退款多久到账",
        "商户发起退款后，款项通常在7至10个工作日内退回您的信用卡。如果商户拒绝退款，"
        "您可以在手机银行对该笔交易申请争议处理。",
        ["账单"],
    ),
    "zh-password": (
        "修改登录密码",
        "忘记密码时，请在登录页点击“忘记密码”，输入短信验证码后设置新密码。新密码至少12位，"
        "不能与最近使用过的密码相同。",
        ["安全"],
    ),
    "zh-installments": (
        "账单分期",
        "单笔消费满500元即可申请账单分期，可选3期、6期或12期，每期收取手续费。"
        "提前还清需一次性支付剩余手续费。",
        ["账单", "分期"],
    ),
    "zh-lost-card": (
        "银行卡挂失",
        "银行卡丢失或被盗，请立即在手机银行冻结并挂失，我们会为您补办新卡，免收挂失费。",
        ["安全"],
    ),
    "zh-points": (
        "积分兑换",
        "每消费1元累积1积分，积分可在积分商城兑换礼品或抵扣年费，有效期三年。",
        ["积分"],
    ),
}

# (query, the article that answers it)
QUERIES: list[tuple[str, str]] = [
    ("my card expired", "card-expiry"),
    ("when does my card expire", "card-expiry"),
    ("refund not received yet", "refunds"),
    ("how long does a refund take", "refunds"),
    ("forgot password", "password-reset"),
    ("reset password", "password-reset"),
    ("lost my card", "lost-card"),
    ("card was stolen", "lost-card"),
    ("fee for paying in a foreign currency", "foreign-fees"),
    ("increase credit limit", "credit-limit"),
    ("信用卡到期了怎么办", "zh-card-expiry"),
    ("退款多久能到账", "zh-refunds"),
    ("忘记密码", "zh-password"),
    ("怎么修改密码", "zh-password"),
    ("账单分期手续费", "zh-installments"),
    ("银行卡丢了", "zh-lost-card"),
    ("积分怎么兑换", "zh-points"),
]

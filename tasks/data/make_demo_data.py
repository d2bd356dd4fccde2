"""Generate the small hand-written demo datasets of the bundled cards (adapters_kit/cards/data/).

support_intent.tsv  : text<TAB>intent   (billing / shipping / account / technical)
support_urgency.tsv : text<TAB>urgency  (urgent / routine)

Every message is composed from the hand-written phrase lists below: an optional
greeting, a core message (with a few slots filled in), end punctuation, an
optional sign-off, and the occasional typo. Deterministic: random.Random(0).
Run with:  python3 make_demo_data.py
"""
import os
import random

# The cards and their data ship inside the package (package data); this generator does not.
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "adapters_kit", "cards",
                    "data")

SLOTS = {
    "n": "2|3|4|5|6|7|8|9",
    "item": "headphones|jacket|blender|desk lamp|backpack|phone case|coffee machine|kettle|printer|rug",
    "device": "iPhone|Android phone|iPad|Samsung tablet|Pixel|work laptop",
    "browser": "Chrome|Firefox|Safari|Edge",
    "os": "iOS 17|Android 14|macOS|Windows 11|Ubuntu",
    "day": "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday",
    "country": "Canada|Ireland|Australia|Japan|Norway|Mexico",
    "amount": "$12.99|49 euros|£30|$120|89.50|$7",
    "month": "January|March|June|August|October",
    "code": "E42|0x80070005|503|ERR_TIMEOUT|1006|SYNC-9",
}

INTENT = {
    "billing": """
I was charged twice for my subscription this month | why did my monthly price go up without any notice
I cancelled in {month} but you still took money from my card
can I get a refund for the annual plan I bought by mistake
the invoice for last month shows the wrong company name and VAT number
my coupon code was accepted but the discount never came off the total
there is a payment of {amount} on my statement that I do not recognise
how do I switch from monthly to yearly billing | I need a receipt for my last purchase for my expense report
you billed me for the premium tier even though I downgraded weeks ago
the refund you promised {n} days ago still has not reached my bank
my card keeps getting declined at checkout even though it works everywhere else
is it possible to pay by bank transfer instead of credit card
the free trial was supposed to end at no cost but I got billed anyway
please update the card on file, the old one expired
I was promised store credit for the returned {item} but my balance is still zero
why am I paying sales tax when I live abroad
the amount taken from my account doesnt match the price shown on the website
can I split the cost of this order across two cards
the renewal fee was taken a week earlier than the date in my contract
where can I download all my invoices from this year | my student discount disappeared after the latest renewal
I got an email saying my payment failed but the money still left my account
do you offer a cheaper plan for charities and nonprofits
I was charged in dollars instead of euros and lost money on the conversion
the hold from my cancelled order is still blocking {amount} on my card
you added a late fee even though I paid on time | please turn off auto renewal, I dont want to be billed again
our finance team needs the invoices addressed to the head office
the promo said first month free but I paid full price
I think I was overcharged, this bill is almost double the usual one
how long does it take for a disputed transaction to be reversed
can I get some money back for the days the service was unavailable
your pricing page says {amount} but checkout asked for more | my gift card balance was not applied to the order total
I need to change the billing address that appears on my statements
""",
    "shipping": """
where is my parcel, tracking hasnt updated in {n} days
the courier marked my package as delivered but nothing arrived
my order was supposed to arrive on {day} and it still hasn't shown up
the box came crushed and the {item} inside is broken | can I change the delivery address, I moved last week
how long does it usually take for orders to reach {country} | I received someone else's order instead of my {item}
my package is stuck in customs, what do I need to do? | only half of my order arrived, the rest is missing
the tracking number you sent me doesnt work on the carrier website | do you send orders to PO boxes
the driver left my parcel outside in the rain
is there a way to collect the order from a store instead of home delivery
it's been two weeks and my order still says processing at the warehouse
can you send the replacement {item} by express | the parcel went back to the sender and I have no idea why
what carrier do you use for international orders | I wont be home on {day}, can the drop off be rescheduled?
my package shows it went to a different city | the estimated arrival date keeps moving back every single day
how do I send back the {item}, I need a return label | the delivery notice says they tried to come but nobody knocked
can you combine my two orders into one box | the parcel arrived open and some items were missing
my order has not left yet even though the site said ships in 24 hours
the locker you used is full and I cant collect my package | do you deliver on weekends
the tracking page just says label created since {day}
my neighbour got my parcel by mistake, can you confirm the address on the order?
I need the {item} by {day} for a birthday, will it get here in time?
I got a dispatch email but the carrier says they never received the package
can I add a note for the driver to leave it with reception
the {item} came without its cable and the box was clearly resealed
why is my order being sent in two separate deliveries | the postman says the address label on my box is unreadable
the van came and went and the doorbell camera shows no one at the door
""",
    "account": """
I can't log in, the password reset email never arrives
my account got locked after too many attempts, how do I unlock it?
how do I change the email address linked to my profile | I lost my phone and can't get the two factor code anymore
please delete my account and all my personal data | someone changed my password and I no longer have access
I want to merge my two accounts into one | the verification code you text me expires before I can type it
how can I change my username | I signed up with Google and now I want to use a normal password instead
can I add a second person to my household profile | I never received the activation link after registering
it says my email is already registered but I never signed up | how do I stop the newsletter and marketing emails
I'd like to update the phone number on file | my account was suspended and nobody told me why
can I hand over my account to the colleague taking over my role | I forgot which email address I used when I joined
how do I get a copy of all the personal data you hold about me
the security questions I set up years ago are not accepted anymore
I keep getting signed out and asked to verify who I am again | how do I set up two step verification
my name is misspelled on my profile and the field won't let me edit it
I got a sign in alert from another country and it wasn't me | can I reopen the account I closed last year
the magic link for signing in takes me back to the registration page
how do I remove an old device from my list of trusted devices
I'm the admin and need to reset the password for one of my team members
my profile shows the wrong date of birth and I need it fixed for verification
is there a way to move my login from my personal email to my work email
my kid created a profile using my email, how do I take it back? | I cannot find where to change my privacy settings
the identity check keeps rejecting my passport photo | please unlink Facebook from my profile
I'm receiving password reset emails I never requested | how can I switch the language on my profile to Spanish
""",
    "technical": """
the app crashes every time I open the camera screen | the website just shows a blank white page on {browser}
after the last update the app won't load past the splash screen | sync between my phone and laptop stopped working
I get error {code} when I try to export a report | notifications stopped arriving on my {device}
the search bar returns nothing even for things I know exist
the page freezes whenever I scroll through the photo gallery | videos buffer forever even on a fast connection
the desktop version eats all my CPU and the fan goes crazy | uploading a file over 10 MB fails with a timeout
the dark mode setting resets every time I restart the app | buttons overlap on small screens and I can't tap save
the calendar integration shows events at the wrong time | is there a known bug with the latest {os} release
the API returns a 500 for every request since this morning | your embed widget breaks the layout of my website
the app drains my battery in a couple of hours | when I click print nothing happens at all
the map screen never finishes loading on my {device}
the app keeps saying no internet connection but everything else works fine
the csv export is missing half of the columns | tapping the confirm button does nothing, the spinner just keeps going
voice messages record but play back as silence | the installer fails halfway through on {os}
images look stretched and blurry since the redesign | the chat window shows messages out of order
does the software support {os}, it won't install for me | the screen is stuck in an endless loop of loading spinners
bluetooth pairing with the speaker drops after a few seconds | the text is tiny and the zoom option is greyed out
I get a certificate warning when visiting your site in {browser}
the keyboard covers the text box so I can't see what I'm typing | autosave isn't working and I lost an hour of edits
the Slack integration stopped posting updates to our channel | the screen flickers when I switch between tabs
""",
}

URGENCY = {
    "urgent": """
our whole site is down and customers cannot place orders
nobody in the office can sign in and we have a client demo in an hour
someone is using my card on your site, I see purchases I never made
I think my account was hacked, the email and password were changed overnight
the payroll export failed and staff need to be paid today
the server has been returning errors for {n} hours, we are losing sales
money was taken from my account {n} times and now my rent will bounce
I have a filing deadline at 5pm today and the app won't let me submit
all our data disappeared from the dashboard after the update
the payment gateway is rejecting every single transaction right now
my medication delivery is missing and I run out tomorrow
a colleague typed his password into a fake email that looks exactly like yours
the system is completely down for our entire team
you took over two thousand dollars from our business account by mistake
I cannot open any of my files and the presentation is this afternoon
our checkout has been broken since midnight and no orders are coming through
I saw a data breach story in the news, is my information exposed?
the wedding dress has to arrive by tomorrow and tracking says it's lost
the app deleted my entire project right before the deadline
I'm locked out of the admin account and the store is offline
customers can see other customers' order details, this is a serious privacy problem
our API keys were leaked publicly, please revoke them
the clinic booking system stopped loading and patients are waiting at the desk
the card reader stopped taking payments in the middle of the lunch rush
every email we send through your service is bouncing and clients are missing invoices
an unknown person added themselves as an owner of our workspace
I was double charged for rent and now my bank account is overdrawn
the exam portal crashed and the test closes in 30 minutes
production went down after your maintenance window and nothing works
the refund never arrived and I can't afford groceries this week
the login page is throwing errors for every user since this morning
I need the signed contract sent today or we lose the deal
our backups failed overnight and the main database just got corrupted
none of our employees can clock in because the app won't open
fraudulent orders are being placed with my saved card as we speak
your site is showing a security warning to every visitor
the event starts tonight and none of the attendees got their tickets
our shop has been taken offline on the day of our biggest sale
I can't work at all, the software won't start on any of our machines
my bank says you took payment three times in one hour
the password reset link was sent to an email address that is not mine
the warehouse scanners are all offline and trucks are waiting to load
court documents must be uploaded before noon and the upload keeps failing
we lost every order from the last {n} hours when the database went down
""",
    "routine": """
is there a way to export my data to excel | it would be nice to have a dark mode in the app
how do I change the language of the interface | just wanted to say the new design looks great
the font on the settings page is a bit small | can you add support for paying with Apple Pay
where can I find last year's invoices | there is a small typo on your pricing page, it says montly
do you have a discount for annual plans | could the app remember the last filter I used
how long does standard delivery usually take | the tooltip on the reports tab covers part of the chart, minor thing
I would like to update the phone number on my profile | any plans to release a Linux version
is it possible to rename a project after creating it | the notification sound is a bit loud, can I change it?
when does the summer sale start | can I schedule reports to be emailed weekly
the help article about importing contacts seems out of date | I'd love keyboard shortcuts in the editor
is there a student discount | how do I add a colleague to my team workspace
the colours in the chart legend are hard to tell apart | would it be possible to get a printed copy of the manual
my order arrived fine, I was wondering if you sell replacement filters
what is the difference between the basic and pro plans
the app takes a second longer to open than it used to, not a big deal | could you add more invoice templates
I have some feedback on the onboarding tutorial | is there an option to change my display name
search results would be more useful if sorted by date | when will the next version come out
can I change the delivery day for future orders | the sidebar icon looks slightly misaligned on my tablet
do you have an API for pulling monthly statistics | how can I unsubscribe from the weekly newsletter
the footer of your website still says 2022 | thanks for fixing the sync issue so quickly last time
is there an app for tablets or only for phones | could you explain how the loyalty points work
the confirmation email could include the order number in the subject line
what are your opening hours over the holidays | can future invoices be addressed to my company instead of me
just curious whether you plan to support more currencies
""",
}

OPENERS = "Hi,|Hello,|hey|Hi there,|Good morning,|Sorry to bother you but|Hello support,|Hi team,|Ugh,|Hey guys,|Good afternoon,"
CLOSERS = "thanks|thank you|please help|any ideas?|can someone look into this?|this is so frustrating|thx|appreciate it|cheers|what should I do?|please advise|regards, Sam|thanks in advance|- Maria"
URG_OPEN = {"urgent": "URGENT:|Please help!|Need help right now -|Emergency:|Hello, this is critical.",
            "routine": "Not urgent, but|Small thing:|Just a suggestion:|When you have a moment,|Hi, a quick one:"}
URG_CLOSE = {"urgent": "please call me back now|we need this fixed immediately|please respond asap|this cannot wait|every minute counts here",
             "routine": "no rush|whenever you get a chance|just curious|keep up the good work|thanks, have a nice day"}
QUESTION_WORDS = ("how", "can", "why", "where", "is", "do", "does", "what", "when", "will", "could", "would", "any")


def split(block):
    return [part.strip() for line in block.strip().splitlines() for part in line.split("|") if part.strip()]


def typo(rng, text):
    words = text.split(" ")
    idx = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha()]
    if not idx:
        return text
    i = rng.choice(idx)
    w, j = words[i], rng.randrange(1, len(words[i]) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]  # swap two letters
    elif kind == 1:
        w = w[:j] + w[j + 1:]  # drop a letter
    else:
        w = w[:j] + w[j] + w[j:]  # double a letter
    words[i] = w
    return " ".join(words)


def compose(rng, core, openers, closers):
    text = core
    for key, options in SLOTS.items():
        while "{" + key + "}" in text:
            text = text.replace("{" + key + "}", rng.choice(options.split("|")), 1)
    is_q = text.endswith("?") or text.split(" ")[0].lower() in QUESTION_WORDS
    text = text.rstrip("?") + rng.choice(["?", "?", "??", ""] if is_q else [".", ".", "!", "", "...", "!!"])
    if rng.random() < 0.55:
        opener = "Quick question:" if is_q and rng.random() < 0.25 else rng.choice(openers)
        text = opener + " " + text
    if rng.random() < 0.5:
        closer = rng.choice(closers)
        plain = text[-1] in ".?!" or closer.startswith("-")
        text += (" " if plain else rng.choice([", ", ". "])) + closer
    if rng.random() < 0.12:
        text = typo(rng, text)
    r = rng.random()
    if r < 0.5:
        text = text[0].upper() + text[1:]
    elif r < 0.6:
        text = text.lower()
    return " ".join(text.split())


def build(rng, spec, per_label, openers, closers, seen):
    rows = []
    for label, block in spec.items():
        cores = split(block)
        ops, cls = openers(label), closers(label)
        made, tries = 0, 0
        while made < per_label:
            tries += 1
            assert tries < 100 * per_label, label
            text = compose(rng, cores[made % len(cores)] if tries <= per_label else rng.choice(cores), ops, cls)
            if text.lower() in seen or not 5 <= len(text.split()) <= 30:
                continue
            assert "\t" not in text and "\n" not in text and '"' not in text
            seen.add(text.lower())
            rows.append((text, label))
            made += 1
    rng.shuffle(rows)
    return rows


def write(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        for text, label in rows:
            f.write(text + "\t" + label + "\n")


def main():
    rng = random.Random(0)
    seen = set()
    generic_open, generic_close = OPENERS.split("|"), CLOSERS.split("|")
    intent_rows = build(rng, INTENT, 120, lambda _: generic_open, lambda _: generic_close, seen)
    urgency_rows = build(
        rng, URGENCY, 200,
        lambda lab: generic_open[:8] + URG_OPEN[lab].split("|"),
        lambda lab: ["thanks", "thank you", "cheers", "regards, Sam", "- Maria"] + URG_CLOSE[lab].split("|"),
        seen,
    )
    write(os.path.join(OUT, "support_intent.tsv"), "text\tintent", intent_rows)
    write(os.path.join(OUT, "support_urgency.tsv"), "text\turgency", urgency_rows)


if __name__ == "__main__":
    main()

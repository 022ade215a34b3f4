//! Correct answers from the paper's workloads (examples/), whatever data plane serves them:
//! the checks the smoke tests run on every plane, and the container test on the shim.

use crate::http::{get, post, HttpResponse};
use spright_example_parking::vision::{pgm, synth};
use std::net::SocketAddr;

const CHECKOUT_FORM: &[u8] = b"email=someone%40example.com&street_address=1600+Amphitheatre+Parkway&zip_code=94043&city=Mountain+View&state=CA&country=United+States&credit_card_number=4432801561520454&credit_card_expiration_month=1&credit_card_expiration_year=2039&credit_card_cvv=672";

/// A shopper's visit: every one of the six request kinds, with the answers checked.
pub fn boutique_visit(a: SocketAddr, kind: &str) {
    // Session ids hold at most 16 bytes.
    let s = format!("v{}", std::process::id() % 10_000_000);
    let ok = |r: HttpResponse, what: &str| -> String {
        let text = r.text();
        assert_eq!(r.status, 200, "{kind}: {what}: {text}");
        assert!(
            text.contains("<title>"),
            "{kind}: {what} is not a page: {text}"
        );
        text
    };

    let home = ok(
        get(a, &format!("/boutique/?session={s}&currency=EUR")),
        "home page",
    );
    assert_eq!(
        home.matches("<li><a href=\"/boutique/product/").count(),
        36,
        "{kind}: every product listed: {home}"
    );
    assert!(
        home.contains("Sunglasses</a> EUR 17.68"),
        "{kind}: price converted to EUR: {home}"
    );
    assert!(home.contains("Cart (0)"), "{kind}: empty cart: {home}");
    assert!(
        home.contains("<aside class=\"ad\">"),
        "{kind}: an ad: {home}"
    );

    let product = ok(
        get(
            a,
            &format!("/boutique/product/1YMWWN1N4O?session={s}&currency=JPY"),
        ),
        "product page",
    );
    assert!(product.contains("<h2>Watch</h2>"), "{kind}: {product}");
    assert!(
        product.contains("JPY 12297.86"),
        "{kind}: price in yen: {product}"
    );
    assert_eq!(
        product.matches("<li><a").count(),
        4,
        "{kind}: four recommendations: {product}"
    );
    assert!(
        !product.contains("product/1YMWWN1N4O?"),
        "{kind}: never recommends the product shown: {product}"
    );

    let added = ok(
        post(
            a,
            &format!("/boutique/cart?session={s}"),
            b"product_id=OLJCESPC7Z&quantity=2",
        ),
        "add to cart",
    );
    assert!(added.contains("Added 2 x Sunglasses"), "{kind}: {added}");
    let cart = ok(
        get(a, &format!("/boutique/cart?session={s}&currency=EUR")),
        "view cart",
    );
    for expected in [
        "Cart (2)",
        "2 x Sunglasses: EUR 35.36",
        "Shipping: EUR 7.95",
        "Total: EUR 43.31",
    ] {
        assert!(
            cart.contains(expected),
            "{kind}: cart shows {expected:?}: {cart}"
        );
    }

    let currency = ok(
        post(
            a,
            &format!("/boutique/setCurrency?session={s}"),
            b"currency_code=GBP",
        ),
        "set currency",
    );
    assert!(currency.contains("shown in GBP"), "{kind}: {currency}");

    let order = ok(
        post(
            a,
            &format!("/boutique/cart/checkout?session={s}&currency=EUR"),
            CHECKOUT_FORM,
        ),
        "checkout",
    );
    assert!(order.contains("Your order is complete!"), "{kind}: {order}");
    assert!(order.contains("Total paid: EUR 43.31"), "{kind}: {order}");
    assert!(
        order.contains("Cart (0)"),
        "{kind}: checkout empties the cart: {order}"
    );

    // Errors name the problem and keep their status through every data plane.
    let bad = post(
        a,
        &format!("/boutique/setCurrency?session={s}"),
        b"currency_code=XXX",
    );
    assert_eq!(
        (bad.status, bad.text().contains("unsupported currency")),
        (400, true),
        "{kind}: {}",
        bad.text()
    );
    let missing = get(a, &format!("/boutique/product/NOSUCHTHING?session={s}"));
    assert_eq!(missing.status, 404, "{kind}: {}", missing.text());
    let empty = post(
        a,
        &format!("/boutique/cart/checkout?session={s}-e&currency=EUR"),
        CHECKOUT_FORM,
    );
    assert!(
        empty.status >= 500 && empty.text().contains("empty"),
        "{kind}: checkout of an empty cart: {} {}",
        empty.status,
        empty.text()
    );
}

/// Readings through sensor -> actuator, with the light's state checked.
pub fn motion_readings(a: SocketAddr, kind: &str) {
    let room = 7 + std::process::id() % 50;
    for (reading, answer) in [
        ("motion=1&lux=40", "light on (was off)"),
        ("motion=1&lux=900", "light on (was on)"),
        ("motion=0&lux=900", "light off (was on)"),
    ] {
        let r = post(
            a,
            "/motion",
            format!("sensor=3&room={room}&{reading}").as_bytes(),
        );
        assert_eq!(r.status, 200, "{kind}: {reading}: {}", r.text());
        assert_eq!(
            r.text(),
            format!("room {room}: {answer}\n"),
            "{kind}: {reading}"
        );
    }
    let bad = post(a, "/motion", b"sensor=3&room=99&motion=1&lux=5");
    assert_eq!(
        bad.status,
        400,
        "{kind}: the sensor's refusal ends the sequence: {}",
        bad.text()
    );
    assert!(
        bad.text().contains("room must be"),
        "{kind}: {}",
        bad.text()
    );
}

/// A car entering and leaving, and a visitor entering, with the charges checked.
pub fn parking_visits(a: SocketAddr, kind: &str) {
    // Seed 3 is a registered vehicle (account 1003); seed 700 is a visitor.
    let frame = |seed: u64| {
        let plate = synth::random_plate(seed);
        (pgm::encode(&synth::plate_image(&plate, seed)), plate)
    };
    let (car, plate) = frame(3);
    let (visitor, visitor_plate) = frame(700);
    let r = post(a, "/parking", &car);
    assert_eq!(
        r.text(),
        format!("plate {plate} entered (account 1003)\n"),
        "{kind}"
    );
    let r = post(a, "/parking", &visitor);
    assert_eq!(
        r.text(),
        format!("plate {visitor_plate} entered (account visitor)\n"),
        "{kind}"
    );
    let r = post(a, "/parking", &car);
    assert!(
        r.text().starts_with(&format!("plate {plate} left after"))
            && r.text().ends_with("EUR charged to account 1003\n"),
        "{kind}: exit charged: {}",
        r.text()
    );
    let bad = post(a, "/parking", b"P5 not really an image");
    assert_eq!(bad.status, 400, "{kind}: {}", bad.text());
    assert!(
        bad.text().contains("not a PGM image"),
        "{kind}: {}",
        bad.text()
    );
}

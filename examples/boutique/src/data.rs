//! The boutique's small in-memory data: the product catalog, currency rates and ads.

use crate::model::{Money, Product};
use spright_sdk::rpc::Str;

/// Euro exchange rates (units of each currency per euro), as in the original's data file.
pub const RATES: &[(&str, f64)] = &[
    ("EUR", 1.0),
    ("USD", 1.1305),
    ("JPY", 126.40),
    ("BGN", 1.9558),
    ("CZK", 25.592),
    ("DKK", 7.4609),
    ("GBP", 0.85970),
    ("HUF", 315.51),
    ("PLN", 4.2996),
    ("RON", 4.7463),
    ("SEK", 10.5375),
    ("CHF", 1.1360),
    ("CAD", 1.5128),
    ("TRY", 6.1490),
    ("AUD", 1.6227),
    ("INR", 79.1645),
];

/// The nine products of the original catalog; the rest of the catalog is generated from
/// `data/product_ids.txt` so that it has a few dozen items.
const ORIGINAL: &[(&str, &str, &str, i64, i32, &str)] = &[
    (
        "OLJCESPC7Z",
        "Sunglasses",
        "Add a modern touch to your outfits with these sleek aviator sunglasses.",
        19,
        990_000_000,
        "accessories",
    ),
    (
        "66VCHSJNUP",
        "Tank Top",
        "Perfectly cropped cotton tank, with a scooped neckline.",
        18,
        990_000_000,
        "clothing,tops",
    ),
    (
        "1YMWWN1N4O",
        "Watch",
        "This gold-tone stainless steel watch will work with most of your outfits.",
        109,
        990_000_000,
        "accessories",
    ),
    (
        "L9ECAV7KIM",
        "Loafers",
        "A neat addition to your summer wardrobe.",
        89,
        990_000_000,
        "footwear",
    ),
    (
        "2ZYFJ3GM2N",
        "Hairdryer",
        "This lightweight hairdryer has 3 heat and speed settings.",
        24,
        990_000_000,
        "hair,beauty",
    ),
    (
        "0PUK6V6EV0",
        "Candle Holder",
        "This small but intricate candle holder is an excellent gift.",
        18,
        990_000_000,
        "decor,home",
    ),
    (
        "LS4PSXUNUM",
        "Salt & Pepper Shakers",
        "Add some flavor to your kitchen.",
        18,
        490_000_000,
        "kitchen",
    ),
    (
        "9SIQT8TOJO",
        "Bamboo Glass Jar",
        "This bamboo glass jar can hold 57 oz (1.7 l) and is perfect for any kitchen.",
        5,
        490_000_000,
        "kitchen",
    ),
    (
        "6E92ZMYYFZ",
        "Mug",
        "A simple mug with a mustard interior.",
        8,
        990_000_000,
        "kitchen",
    ),
];

const CATEGORIES: &[&str] = &[
    "accessories",
    "clothing",
    "footwear",
    "kitchen",
    "decor",
    "home",
];

const PRODUCT_IDS: &str = include_str!("../data/product_ids.txt");

/// The catalog: the original nine products, then generated ones up to the ids listed.
pub fn catalog() -> Vec<Product> {
    let mut products: Vec<Product> = ORIGINAL
        .iter()
        .map(
            |&(id, name, description, units, nanos, categories)| Product {
                id: Str::truncated(id),
                name: Str::truncated(name),
                description: Str::truncated(description),
                picture: Str::truncated(&format!(
                    "/static/img/products/{}.jpg",
                    name.to_lowercase()
                )),
                price_usd: Money::new("USD", units, nanos),
                categories: Str::truncated(categories),
            },
        )
        .collect();
    for (n, id) in PRODUCT_IDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if products.iter().any(|p| p.id.as_str() == id) {
            continue;
        }
        let category = CATEGORIES[n % CATEGORIES.len()];
        products.push(Product {
            id: Str::truncated(id),
            name: Str::truncated(&format!("Vintage {category} item {n}")),
            description: Str::truncated(&format!(
                "A well-kept {category} piece, number {n} of our vintage line."
            )),
            picture: Str::truncated(&format!("/static/img/products/vintage-{n}.jpg")),
            price_usd: Money::new("USD", 5 + (n as i64 * 7) % 90, 490_000_000),
            categories: Str::truncated(category),
        });
    }
    products
}

/// Ads by category, as the original's ad service keeps them.
pub const ADS: &[(&str, &str, &str)] = &[
    (
        "clothing",
        "/product/66VCHSJNUP",
        "Tank top for sale. 20% off.",
    ),
    (
        "accessories",
        "/product/1YMWWN1N4O",
        "Watch for sale. Buy one, get second kit for free",
    ),
    (
        "footwear",
        "/product/L9ECAV7KIM",
        "Loafers for sale. Buy one, get second one for free",
    ),
    (
        "hair",
        "/product/2ZYFJ3GM2N",
        "Hairdryer for sale. 50% off.",
    ),
    (
        "decor",
        "/product/0PUK6V6EV0",
        "Candle holder for sale. 30% off.",
    ),
    (
        "kitchen",
        "/product/9SIQT8TOJO",
        "Bamboo glass jar for sale. 10% off.",
    ),
    (
        "kitchen",
        "/product/6E92ZMYYFZ",
        "Mug for sale. Buy two, get third one for free",
    ),
];

//! Shipping: quotes by item count and tracking ids for shipped orders.

use crate::model::*;
use spright_sdk::rpc::{Arg, Cx, Service, Str};

pub fn service() -> Service {
    Service::new("shipping")
        .method::<GetQuote, _, _>(|req: Arg<ShippingRequest>, _: Cx| async move {
            Ok(Quote {
                cost_usd: quote(&req.items),
            })
        })
        .method::<ShipOrder, _, _>(|req: Arg<ShippingRequest>, _: Cx| async move {
            if req.address.street_address.is_empty() {
                return Err("no address to ship to".into());
            }
            Ok(TrackingId {
                tracking_id: Str::truncated(&tracking_id(&req.address)),
            })
        })
}

/// A flat 8.99 USD for any non-empty order, as the original's quote.
fn quote(items: &spright_sdk::rpc::List<CartItem, MAX_CART_ITEMS>) -> Money {
    let count: u64 = items.as_slice().iter().map(|i| i.quantity as u64).sum();
    if count == 0 {
        Money::new("USD", 0, 0)
    } else {
        Money::new("USD", 8, 990_000_000)
    }
}

/// A tracking id derived from the address plus randomness, in the original's format.
fn tracking_id(address: &Address) -> String {
    let salt = address.street_address.as_str().len() + address.city.as_str().len();
    let letter = |n: usize| (b'A' + (n % 26) as u8) as char;
    format!(
        "{}{}-{}{}-{}{}",
        letter(fastrand::usize(..)),
        letter(fastrand::usize(..)),
        salt,
        fastrand::u32(10_000..100_000),
        salt / 2,
        fastrand::u32(100_000..1_000_000)
    )
}

//! The ten services. Each is a `Service` of typed methods; the frontend also serves the
//! shop's HTTP pages.

pub mod ad;
pub mod cart;
pub mod checkout;
pub mod currency;
pub mod email;
pub mod frontend;
pub mod payment;
pub mod productcatalog;
pub mod recommendation;
pub mod shipping;

use spright_sdk::rpc::Service;

/// The names of the services, as the chain file names its functions.
pub const NAMES: &[&str] = &[
    "frontend",
    "currency",
    "productcatalog",
    "cart",
    "recommendation",
    "shipping",
    "checkout",
    "payment",
    "email",
    "ad",
];

/// The service called `name`.
pub fn by_name(name: &str) -> Option<Service> {
    Some(match name {
        "frontend" => frontend::service(),
        "currency" => currency::service(),
        "productcatalog" => productcatalog::service(),
        "cart" => cart::service(),
        "recommendation" => recommendation::service(),
        "shipping" => shipping::service(),
        "checkout" => checkout::service(),
        "payment" => payment::service(),
        "email" => email::service(),
        "ad" => ad::service(),
        _ => return None,
    })
}

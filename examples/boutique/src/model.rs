//! The Online Boutique's messages, as fixed-layout structs read in place from the pool, and
//! its methods. Field names follow the original's `demo.proto`.

use bytemuck::{Pod, Zeroable};
use serde::{Deserialize, Serialize};
use spright_sdk::rpc::{Empty, List, Method, Str};

/// An amount in a currency: whole `units` plus `nanos` (10^-9 units) of the same sign.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Money {
    pub units: i64,
    pub nanos: i32,
    pub currency_code: Str<4>,
}

const NANOS: i128 = 1_000_000_000;

impl Money {
    pub fn new(currency: &str, units: i64, nanos: i32) -> Money {
        Money {
            units,
            nanos,
            currency_code: Str::truncated(currency),
        }
    }

    pub fn from_nanos(currency: Str<4>, total: i128) -> Money {
        Money {
            units: (total / NANOS) as i64,
            nanos: (total % NANOS) as i32,
            currency_code: currency,
        }
    }

    pub fn total_nanos(&self) -> i128 {
        self.units as i128 * NANOS + self.nanos as i128
    }

    /// The sum of two amounts in the same currency.
    pub fn plus(&self, other: &Money) -> Money {
        Money::from_nanos(self.currency_code, self.total_nanos() + other.total_nanos())
    }

    pub fn times(&self, n: u32) -> Money {
        Money::from_nanos(self.currency_code, self.total_nanos() * n as i128)
    }

    /// Valid amounts have nanos within range and of the same sign as units.
    pub fn is_valid(&self) -> bool {
        (self.nanos.unsigned_abs() as i128) < NANOS
            && !((self.units > 0 && self.nanos < 0) || (self.units < 0 && self.nanos > 0))
    }
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.units < 0 || self.nanos < 0 {
            "-"
        } else {
            ""
        };
        let cents = (self.nanos / 10_000_000).abs();
        write!(
            f,
            "{} {sign}{}.{:02}",
            self.currency_code,
            self.units.unsigned_abs(),
            cents
        )
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Product {
    pub id: Str<16>,
    pub name: Str<32>,
    pub description: Str<96>,
    pub picture: Str<48>,
    pub price_usd: Money,
    /// Comma-separated.
    pub categories: Str<48>,
}

pub const MAX_PRODUCTS: usize = 40;
pub const MAX_CART_ITEMS: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct ProductList {
    pub products: List<Product, MAX_PRODUCTS>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct ProductId {
    pub id: Str<16>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Currencies {
    pub currency_codes: List<Str<4>, 16>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct ConvertRequest {
    pub from: Money,
    pub to_code: Str<4>,
    #[serde(skip)]
    pub _pad: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable, Serialize, Deserialize)]
pub struct CartItem {
    pub product_id: Str<16>,
    pub quantity: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct AddItemRequest {
    pub user_id: Str<16>,
    pub item: CartItem,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct UserId {
    pub user_id: Str<16>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Cart {
    pub user_id: Str<16>,
    pub items: List<CartItem, MAX_CART_ITEMS>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct RecommendationRequest {
    pub user_id: Str<16>,
    pub product_ids: List<Str<16>, MAX_CART_ITEMS>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct ProductIds {
    pub product_ids: List<Str<16>, 8>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Address {
    pub street_address: Str<48>,
    pub city: Str<32>,
    pub state: Str<16>,
    pub country: Str<32>,
    pub zip_code: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct ShippingRequest {
    pub address: Address,
    pub items: List<CartItem, MAX_CART_ITEMS>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Quote {
    pub cost_usd: Money,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct TrackingId {
    pub tracking_id: Str<32>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct CreditCard {
    pub credit_card_number: Str<20>,
    pub credit_card_cvv: i32,
    pub credit_card_expiration_year: i32,
    pub credit_card_expiration_month: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct ChargeRequest {
    pub amount: Money,
    pub credit_card: CreditCard,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct TransactionId {
    pub transaction_id: Str<40>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct OrderItem {
    pub cost: Money,
    pub item: CartItem,
    #[serde(skip)]
    pub _pad: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct OrderResult {
    pub shipping_cost: Money,
    pub order_id: Str<40>,
    pub shipping_tracking_id: Str<32>,
    pub items: List<OrderItem, MAX_CART_ITEMS>,
    pub shipping_address: Address,
    #[serde(skip)]
    pub _pad: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct EmailRequest {
    pub email: Str<48>,
    pub order: OrderResult,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct PlaceOrderRequest {
    pub user_id: Str<16>,
    pub user_currency: Str<4>,
    pub address: Address,
    pub email: Str<48>,
    pub credit_card: CreditCard,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct AdRequest {
    pub context_keys: List<Str<16>, 4>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Ad {
    pub redirect_url: Str<48>,
    pub text: Str<64>,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable, Serialize, Deserialize)]
pub struct Ads {
    pub ads: List<Ad, 4>,
}

macro_rules! methods {
    ($($method:ident: $service:literal . $name:literal ($req:ty) -> $resp:ty;)*) => {
        $(
            pub struct $method;
            impl Method for $method {
                const SERVICE: &'static str = $service;
                const NAME: &'static str = $name;
                type Req = $req;
                type Resp = $resp;
            }
        )*
    };
}

methods! {
    GetSupportedCurrencies: "currency"."GetSupportedCurrencies"(Empty) -> Currencies;
    Convert: "currency"."Convert"(ConvertRequest) -> Money;
    ListProducts: "productcatalog"."ListProducts"(Empty) -> ProductList;
    GetProduct: "productcatalog"."GetProduct"(ProductId) -> Product;
    AddItem: "cart"."AddItem"(AddItemRequest) -> Empty;
    GetCart: "cart"."GetCart"(UserId) -> Cart;
    EmptyCart: "cart"."EmptyCart"(UserId) -> Empty;
    ListRecommendations: "recommendation"."ListRecommendations"(RecommendationRequest) -> ProductIds;
    GetQuote: "shipping"."GetQuote"(ShippingRequest) -> Quote;
    ShipOrder: "shipping"."ShipOrder"(ShippingRequest) -> TrackingId;
    Charge: "payment"."Charge"(ChargeRequest) -> TransactionId;
    SendOrderConfirmation: "email"."SendOrderConfirmation"(EmailRequest) -> Empty;
    PlaceOrder: "checkout"."PlaceOrder"(PlaceOrderRequest) -> OrderResult;
    GetAds: "ad"."GetAds"(AdRequest) -> Ads;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_sums_and_prints_with_its_sign() {
        let a = Money::new("EUR", 1, 750_000_000);
        assert_eq!(a.plus(&a).to_string(), "EUR 3.50");
        assert_eq!(a.times(3).to_string(), "EUR 5.25");
        assert_eq!(Money::new("EUR", 0, -500_000_000).to_string(), "EUR -0.50");
        assert_eq!(Money::new("EUR", -2, -10_000_000).to_string(), "EUR -2.01");
        assert!(!Money::new("EUR", 1, -1).is_valid());
    }
}

//! The gRPC-style baseline's protobuf twin of the Online Boutique's messages: conversions
//! between the fixed-layout structs the services exchange (`spright_example_boutique::model`)
//! and the original's `demo.proto` messages ([`pb`]), installed into the boutique's protobuf
//! slots before its services are hosted. Spright never serialises them: it passes the structs
//! in place.

mod pb;

use bytemuck::Pod;
use prost::Message as _;
use spright_example_boutique::model::*;
use spright_example_boutique::proto::{self as slots, HasProto, ProtoCodec};
use spright_sdk::rpc::{List, Str};

/// Gives every message the boutique's methods exchange its protobuf form.
pub fn install() {
    fn one<T: Proto + HasProto>() {
        slots::install::<T>(ProtoCodec {
            encode: |value| value.to_pb().encode_to_vec(),
            decode: |bytes| {
                T::Pb::decode(bytes)
                    .map_err(|e| e.to_string())
                    .and_then(T::from_pb)
            },
        });
    }
    one::<Money>();
    one::<Product>();
    one::<ProductList>();
    one::<ProductId>();
    one::<Currencies>();
    one::<ConvertRequest>();
    one::<AddItemRequest>();
    one::<UserId>();
    one::<Cart>();
    one::<RecommendationRequest>();
    one::<ProductIds>();
    one::<ShippingRequest>();
    one::<Quote>();
    one::<TrackingId>();
    one::<ChargeRequest>();
    one::<TransactionId>();
    one::<OrderResult>();
    one::<EmailRequest>();
    one::<PlaceOrderRequest>();
    one::<AdRequest>();
    one::<Ads>();
}

/// A message's protobuf twin and the conversions both ways.
trait Proto: Sized {
    type Pb: prost::Message + Default;
    fn to_pb(&self) -> Self::Pb;
    fn from_pb(pb: Self::Pb) -> Result<Self, String>;
}

fn s<const N: usize>(v: &Str<N>) -> String {
    v.as_str().to_owned()
}

fn st<const N: usize>(v: &str) -> Result<Str<N>, String> {
    Str::new(v).map_err(|e| e.to_string())
}

fn to_list<T: Proto + Pod, const N: usize>(items: Vec<T::Pb>) -> Result<List<T, N>, String> {
    if items.len() > N {
        return Err(format!("{} items where at most {N} fit", items.len()));
    }
    let mut list = List::new();
    for item in items {
        let _ = list.push(T::from_pb(item)?);
    }
    Ok(list)
}

fn from_list<T: Proto + Pod, const N: usize>(list: &List<T, N>) -> Vec<T::Pb> {
    list.as_slice().iter().map(Proto::to_pb).collect()
}

fn strs_to_list<const M: usize, const N: usize>(v: Vec<String>) -> Result<List<Str<M>, N>, String> {
    if v.len() > N {
        return Err(format!("{} items where at most {N} fit", v.len()));
    }
    v.iter()
        .map(|x| st::<M>(x))
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.into_iter().collect())
}

fn list_to_strs<const M: usize, const N: usize>(l: &List<Str<M>, N>) -> Vec<String> {
    l.as_slice().iter().map(s).collect()
}

fn required<T: Proto>(pb: Option<T::Pb>, field: &str) -> Result<T, String> {
    T::from_pb(pb.ok_or_else(|| format!("{field} is missing"))?)
}

impl Proto for Money {
    type Pb = pb::Money;
    fn to_pb(&self) -> pb::Money {
        pb::Money {
            currency_code: s(&self.currency_code),
            units: self.units,
            nanos: self.nanos,
        }
    }
    fn from_pb(p: pb::Money) -> Result<Self, String> {
        Ok(Money {
            units: p.units,
            nanos: p.nanos,
            currency_code: st(&p.currency_code)?,
        })
    }
}

impl Proto for Product {
    type Pb = pb::Product;
    fn to_pb(&self) -> pb::Product {
        pb::Product {
            id: s(&self.id),
            name: s(&self.name),
            description: s(&self.description),
            picture: s(&self.picture),
            price_usd: Some(self.price_usd.to_pb()),
            categories: self
                .categories
                .as_str()
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }
    fn from_pb(p: pb::Product) -> Result<Self, String> {
        Ok(Product {
            id: st(&p.id)?,
            name: st(&p.name)?,
            description: st(&p.description)?,
            picture: st(&p.picture)?,
            price_usd: required(p.price_usd, "price_usd")?,
            categories: st(&p.categories.join(","))?,
        })
    }
}

impl Proto for ProductList {
    type Pb = pb::ListProductsResponse;
    fn to_pb(&self) -> Self::Pb {
        pb::ListProductsResponse {
            products: from_list(&self.products),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(ProductList {
            products: to_list(p.products)?,
        })
    }
}

impl Proto for ProductId {
    type Pb = pb::GetProductRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::GetProductRequest { id: s(&self.id) }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(ProductId { id: st(&p.id)? })
    }
}

impl Proto for Currencies {
    type Pb = pb::GetSupportedCurrenciesResponse;
    fn to_pb(&self) -> Self::Pb {
        pb::GetSupportedCurrenciesResponse {
            currency_codes: list_to_strs(&self.currency_codes),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(Currencies {
            currency_codes: strs_to_list(p.currency_codes)?,
        })
    }
}

impl Proto for ConvertRequest {
    type Pb = pb::CurrencyConversionRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::CurrencyConversionRequest {
            from: Some(self.from.to_pb()),
            to_code: s(&self.to_code),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(ConvertRequest {
            from: required(p.from, "from")?,
            to_code: st(&p.to_code)?,
            _pad: [0; 4],
        })
    }
}

impl Proto for CartItem {
    type Pb = pb::CartItem;
    fn to_pb(&self) -> Self::Pb {
        pb::CartItem {
            product_id: s(&self.product_id),
            quantity: self.quantity as i32,
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(CartItem {
            product_id: st(&p.product_id)?,
            quantity: u32::try_from(p.quantity).map_err(|_| "negative quantity".to_owned())?,
        })
    }
}

impl Proto for AddItemRequest {
    type Pb = pb::AddItemRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::AddItemRequest {
            user_id: s(&self.user_id),
            item: Some(self.item.to_pb()),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(AddItemRequest {
            user_id: st(&p.user_id)?,
            item: required(p.item, "item")?,
        })
    }
}

impl Proto for UserId {
    type Pb = pb::UserRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::UserRequest {
            user_id: s(&self.user_id),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(UserId {
            user_id: st(&p.user_id)?,
        })
    }
}

impl Proto for Cart {
    type Pb = pb::Cart;
    fn to_pb(&self) -> Self::Pb {
        pb::Cart {
            user_id: s(&self.user_id),
            items: from_list(&self.items),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(Cart {
            user_id: st(&p.user_id)?,
            items: to_list(p.items)?,
        })
    }
}

impl Proto for RecommendationRequest {
    type Pb = pb::ListRecommendationsRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::ListRecommendationsRequest {
            user_id: s(&self.user_id),
            product_ids: list_to_strs(&self.product_ids),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(RecommendationRequest {
            user_id: st(&p.user_id)?,
            product_ids: strs_to_list(p.product_ids)?,
        })
    }
}

impl Proto for ProductIds {
    type Pb = pb::ListRecommendationsResponse;
    fn to_pb(&self) -> Self::Pb {
        pb::ListRecommendationsResponse {
            product_ids: list_to_strs(&self.product_ids),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(ProductIds {
            product_ids: strs_to_list(p.product_ids)?,
        })
    }
}

impl Proto for Address {
    type Pb = pb::Address;
    fn to_pb(&self) -> Self::Pb {
        pb::Address {
            street_address: s(&self.street_address),
            city: s(&self.city),
            state: s(&self.state),
            country: s(&self.country),
            zip_code: self.zip_code,
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(Address {
            street_address: st(&p.street_address)?,
            city: st(&p.city)?,
            state: st(&p.state)?,
            country: st(&p.country)?,
            zip_code: p.zip_code,
        })
    }
}

impl Proto for ShippingRequest {
    type Pb = pb::ShippingRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::ShippingRequest {
            address: Some(self.address.to_pb()),
            items: from_list(&self.items),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(ShippingRequest {
            address: required(p.address, "address")?,
            items: to_list(p.items)?,
        })
    }
}

impl Proto for Quote {
    type Pb = pb::GetQuoteResponse;
    fn to_pb(&self) -> Self::Pb {
        pb::GetQuoteResponse {
            cost_usd: Some(self.cost_usd.to_pb()),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(Quote {
            cost_usd: required(p.cost_usd, "cost_usd")?,
        })
    }
}

impl Proto for TrackingId {
    type Pb = pb::ShipOrderResponse;
    fn to_pb(&self) -> Self::Pb {
        pb::ShipOrderResponse {
            tracking_id: s(&self.tracking_id),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(TrackingId {
            tracking_id: st(&p.tracking_id)?,
        })
    }
}

impl Proto for CreditCard {
    type Pb = pb::CreditCardInfo;
    fn to_pb(&self) -> Self::Pb {
        pb::CreditCardInfo {
            credit_card_number: s(&self.credit_card_number),
            credit_card_cvv: self.credit_card_cvv,
            credit_card_expiration_year: self.credit_card_expiration_year,
            credit_card_expiration_month: self.credit_card_expiration_month,
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(CreditCard {
            credit_card_number: st(&p.credit_card_number)?,
            credit_card_cvv: p.credit_card_cvv,
            credit_card_expiration_year: p.credit_card_expiration_year,
            credit_card_expiration_month: p.credit_card_expiration_month,
        })
    }
}

impl Proto for ChargeRequest {
    type Pb = pb::ChargeRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::ChargeRequest {
            amount: Some(self.amount.to_pb()),
            credit_card: Some(self.credit_card.to_pb()),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(ChargeRequest {
            amount: required(p.amount, "amount")?,
            credit_card: required(p.credit_card, "credit_card")?,
        })
    }
}

impl Proto for TransactionId {
    type Pb = pb::ChargeResponse;
    fn to_pb(&self) -> Self::Pb {
        pb::ChargeResponse {
            transaction_id: s(&self.transaction_id),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(TransactionId {
            transaction_id: st(&p.transaction_id)?,
        })
    }
}

impl Proto for OrderItem {
    type Pb = pb::OrderItem;
    fn to_pb(&self) -> Self::Pb {
        pb::OrderItem {
            item: Some(self.item.to_pb()),
            cost: Some(self.cost.to_pb()),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(OrderItem {
            item: required(p.item, "item")?,
            cost: required(p.cost, "cost")?,
            _pad: [0; 4],
        })
    }
}

impl Proto for OrderResult {
    type Pb = pb::OrderResult;
    fn to_pb(&self) -> Self::Pb {
        pb::OrderResult {
            order_id: s(&self.order_id),
            shipping_tracking_id: s(&self.shipping_tracking_id),
            shipping_cost: Some(self.shipping_cost.to_pb()),
            shipping_address: Some(self.shipping_address.to_pb()),
            items: from_list(&self.items),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(OrderResult {
            shipping_cost: required(p.shipping_cost, "shipping_cost")?,
            order_id: st(&p.order_id)?,
            shipping_tracking_id: st(&p.shipping_tracking_id)?,
            items: to_list(p.items)?,
            shipping_address: required(p.shipping_address, "shipping_address")?,
            _pad: [0; 4],
        })
    }
}

impl Proto for EmailRequest {
    type Pb = pb::SendOrderConfirmationRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::SendOrderConfirmationRequest {
            email: s(&self.email),
            order: Some(self.order.to_pb()),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(EmailRequest {
            email: st(&p.email)?,
            order: required(p.order, "order")?,
        })
    }
}

impl Proto for PlaceOrderRequest {
    type Pb = pb::PlaceOrderRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::PlaceOrderRequest {
            user_id: s(&self.user_id),
            user_currency: s(&self.user_currency),
            address: Some(self.address.to_pb()),
            email: s(&self.email),
            credit_card: Some(self.credit_card.to_pb()),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(PlaceOrderRequest {
            user_id: st(&p.user_id)?,
            user_currency: st(&p.user_currency)?,
            address: required(p.address, "address")?,
            email: st(&p.email)?,
            credit_card: required(p.credit_card, "credit_card")?,
        })
    }
}

impl Proto for AdRequest {
    type Pb = pb::AdRequest;
    fn to_pb(&self) -> Self::Pb {
        pb::AdRequest {
            context_keys: list_to_strs(&self.context_keys),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(AdRequest {
            context_keys: strs_to_list(p.context_keys)?,
        })
    }
}

impl Proto for Ad {
    type Pb = pb::Ad;
    fn to_pb(&self) -> Self::Pb {
        pb::Ad {
            redirect_url: s(&self.redirect_url),
            text: s(&self.text),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(Ad {
            redirect_url: st(&p.redirect_url)?,
            text: st(&p.text)?,
        })
    }
}

impl Proto for Ads {
    type Pb = pb::AdResponse;
    fn to_pb(&self) -> Self::Pb {
        pb::AdResponse {
            ads: from_list(&self.ads),
        }
    }
    fn from_pb(p: Self::Pb) -> Result<Self, String> {
        Ok(Ads {
            ads: to_list(p.ads)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spright_sdk::rpc::Codec;

    #[test]
    fn every_message_gets_its_protobuf_form() {
        install();
        assert!(slots::missing().is_empty(), "{:?}", slots::missing());
    }

    #[test]
    fn the_wire_format_is_demo_protos() {
        install();
        let money = Money::new("EUR", 1, 5);
        let wire = Codec::Proto.encode(&money).unwrap();
        // currency_code (1, string), units (2, int64), nanos (3, int32)
        assert_eq!(wire, b"\x0a\x03EUR\x10\x01\x18\x05");
    }

    #[test]
    fn messages_round_trip_through_protobuf() {
        install();
        let item = CartItem {
            product_id: Str::new("OLJCESPC7Z").unwrap(),
            quantity: 3,
        };
        let order = OrderResult {
            shipping_cost: Money::new("USD", 8, 990_000_000),
            order_id: Str::new("order-1").unwrap(),
            shipping_tracking_id: Str::new("TR-1").unwrap(),
            items: [OrderItem {
                cost: Money::new("USD", 19, 990_000_000),
                item,
                _pad: [0; 4],
            }]
            .into_iter()
            .collect(),
            shipping_address: Address {
                city: Str::new("Mountain View").unwrap(),
                zip_code: 94043,
                ..Address::default()
            },
            _pad: [0; 4],
        };
        let wire = Codec::Proto.encode(&order).unwrap();
        assert_eq!(Codec::Proto.decode::<OrderResult>(&wire).unwrap(), order);
        let product = Product {
            categories: Str::new("kitchen,home").unwrap(),
            ..Product::default()
        };
        let wire = Codec::Proto.encode(&product).unwrap();
        let pb = pb::Product::decode(wire.as_slice()).unwrap();
        assert_eq!(pb.categories, ["kitchen", "home"]);
        assert_eq!(Codec::Proto.decode::<Product>(&wire).unwrap(), product);
    }
}

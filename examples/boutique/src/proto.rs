//! Where the messages' protobuf form plugs in. Spright passes the structs of [`model`] in
//! place and never needs one; a host that speaks gRPC (the original's `demo.proto` on the
//! wire) brings its own and [`install`]s it, one codec per message type, before it serves.
//! Until then a message has no protobuf form, which the SDK reports as such.
//!
//! [`model`]: crate::model

use crate::model::*;
use spright_sdk::rpc::Wire;
use std::sync::OnceLock;

/// A message's protobuf encoding, both ways.
pub struct ProtoCodec<T> {
    pub encode: fn(&T) -> Vec<u8>,
    pub decode: fn(&[u8]) -> Result<T, String>,
}

/// A message a host can give a protobuf form.
pub trait HasProto: Wire {
    /// The codec installed for this type, if any.
    fn slot() -> &'static OnceLock<ProtoCodec<Self>>;
}

/// Gives `T` its protobuf form; the first codec installed for a type stays.
pub fn install<T: HasProto>(codec: ProtoCodec<T>) {
    let _ = T::slot().set(codec);
}

macro_rules! slots {
    ($($t:ty),* $(,)?) => {
        $(
            impl HasProto for $t {
                fn slot() -> &'static OnceLock<ProtoCodec<Self>> {
                    static SLOT: OnceLock<ProtoCodec<$t>> = OnceLock::new();
                    &SLOT
                }
            }

            impl Wire for $t {
                fn encode_proto(&self) -> Option<Vec<u8>> {
                    Some((Self::slot().get()?.encode)(self))
                }
                fn decode_proto(bytes: &[u8]) -> Option<Result<Self, String>> {
                    Some((Self::slot().get()?.decode)(bytes))
                }
            }
        )*

        /// The message types still without a protobuf form, by name: a gRPC host checks that
        /// it installed them all.
        pub fn missing() -> Vec<&'static str> {
            let mut missing = Vec::new();
            $(
                if <$t as HasProto>::slot().get().is_none() {
                    missing.push(stringify!($t));
                }
            )*
            missing
        }
    };
}

// Every request and response of the methods in `model` (`Empty` is the SDK's own).
slots!(
    Money,
    Product,
    ProductList,
    ProductId,
    Currencies,
    ConvertRequest,
    AddItemRequest,
    UserId,
    Cart,
    RecommendationRequest,
    ProductIds,
    ShippingRequest,
    Quote,
    TrackingId,
    ChargeRequest,
    TransactionId,
    OrderResult,
    EmailRequest,
    PlaceOrderRequest,
    AdRequest,
    Ads,
);

//! `dispatch_store!`: implements `StateStore` for an enum whose every variant holds a store,
//! by `match`, without boxing — for the app's `AnyStore`, so that a change to the trait is
//! made once, here, and a new store kind is one line of the app's list.

/// Implements `StateStore` for an enum of stores: `dispatch_store!(TYPE { Variant, … })`, each
/// variant a tuple variant holding one store. The trait's provided methods are left to their
/// defaults, which call the dispatched ones.
#[macro_export]
macro_rules! dispatch_store {
    ($enum:ty { $($variant:ident),+ $(,)? }) => {
        $crate::dispatch_store!(@impl $enum, [$($variant),+]
            mut lease_within(
                link: &str,
                owner: &str,
                ttl: ::std::time::Duration,
                max_running: Option<usize>,
            ) -> $crate::Lease;
            ref renew(lease: &$crate::Lease) -> ();
            mut release(lease: $crate::Lease) -> ();
            mut layout(link: &str, fields: &[String]) -> $crate::LinkLayout;
            mut start_run(lease: &$crate::Lease, mode: &str, published: bool, now: $crate::dispatch::Timestamp)
                -> $crate::dispatch::RunId;
            mut commit_plan_chunk(
                lease: &$crate::Lease,
                run: $crate::dispatch::RunId,
                layout: &$crate::LinkLayout,
                chunk: $crate::PlanChunk,
                now: $crate::dispatch::Timestamp,
            ) -> ();
            mut discard_plan(lease: &$crate::Lease, run: $crate::dispatch::RunId) -> usize;
            mut publish_plan(
                lease: &$crate::Lease,
                run: $crate::dispatch::RunId,
                layout: &$crate::LinkLayout,
                publication: $crate::PlanPublication,
                now: $crate::dispatch::Timestamp,
            ) -> ();
            mut start_send(lease: &$crate::Lease, ids: Vec<$crate::OutboxId>, now: $crate::dispatch::Timestamp)
                -> $crate::SendId;
            mut close_batch(
                lease: &$crate::Lease,
                layout: &$crate::LinkLayout,
                batch: $crate::BatchClose,
                now: $crate::dispatch::Timestamp,
            ) -> ();
            mut finish_run(lease: &$crate::Lease, end: $crate::RunEnd) -> ();
            mut move_sequence(lease: &$crate::Lease, side: $crate::dispatch::Side, from: &str, to: &str) -> bool;
            mut decide_review(
                link: &str,
                id: $crate::ReviewId,
                decision: &$crate::Decision,
                audit: &$crate::AuditEntry,
                now: $crate::dispatch::Timestamp,
            ) -> ();
            mut retry_dead(ids: &[$crate::OutboxId], now: $crate::dispatch::Timestamp) -> ();
            mut drop_dead(id: $crate::OutboxId, now: $crate::dispatch::Timestamp) -> ();
            mut purge_history(link: &str, before: $crate::dispatch::Timestamp) -> $crate::PurgedHistory;
            mut erase_record(
                link: &str,
                key: &$crate::dispatch::RecordKey,
                by: &str,
                now: $crate::dispatch::Timestamp,
            ) -> $crate::ErasedRecord;
            mut accept_webhook(hook: &$crate::NewWebhook, seen_since: $crate::dispatch::Timestamp) -> bool;
            mut settle_webhooks(
                link: &str,
                read_at: $crate::dispatch::Timestamp,
                forget_before: $crate::dispatch::Timestamp,
            ) -> ();
            ref waiting_webhook(link: &str) -> Option<$crate::dispatch::Timestamp>;
            ref webhook_records(link: &str, limit: usize) -> Option<$crate::NamedRecords>;
            mut settle_named_webhooks(ids: &[i64]) -> ();
            ref digests(link: &str, layout: &$crate::LinkLayout, keys: &[$crate::dispatch::RecordKey])
                -> ::std::collections::HashMap<$crate::dispatch::RecordKey, $crate::DigestEntry>;
            ref baselines(link: &str, layout: &$crate::LinkLayout, keys: &[$crate::dispatch::RecordKey])
                -> ::std::collections::HashMap<$crate::dispatch::RecordKey, $crate::Baseline>;
            ref baseline_count(link: &str) -> u64;
            ref cursor(link: &str, side: $crate::dispatch::Side) -> $crate::CursorState;
            ref keys_of_ids(link: &str, side: $crate::dispatch::Side, ids: &[$crate::dispatch::RecordId])
                -> ::std::collections::HashMap<$crate::dispatch::RecordId, $crate::dispatch::RecordKey>;
            ref due_outbox(link: &str, now: $crate::dispatch::Timestamp, after: $crate::OutboxId, limit: usize)
                -> Vec<$crate::OutboxEntry>;
            ref next_due(link: &str) -> Option<$crate::dispatch::Timestamp>;
            ref open_outbox_for(link: &str, keys: &[$crate::dispatch::RecordKey]) -> Vec<$crate::OutboxEntry>;
            ref open_outbox_keys(link: &str) -> Vec<$crate::dispatch::RecordKey>;
            ref outbox_page(query: $crate::OutboxQuery<'_>)
                -> $crate::ListPage<$crate::OutboxEntry>;
            ref outbox_entry(id: $crate::OutboxId) -> $crate::OutboxEntry;
            ref outbox_counts(link: &str) -> ::std::collections::HashMap<$crate::OutboxStatus, u64>;
            ref live_reviews_for(link: &str, keys: &[$crate::dispatch::RecordKey]) -> Vec<$crate::Review>;
            ref keys_with_live_reviews(link: &str) -> Vec<$crate::dispatch::RecordKey>;
            ref reviews_page(query: $crate::ReviewQuery<'_>)
                -> $crate::ListPage<$crate::Review>;
            ref review(id: $crate::ReviewId) -> $crate::Review;
            ref runs_page(query: $crate::RunQuery<'_>)
                -> $crate::ListPage<$crate::RunRow>;
            ref run(id: $crate::dispatch::RunId) -> $crate::RunRow;
            ref runs_since(since: $crate::dispatch::Timestamp) -> Vec<$crate::RunRow>;
            ref audit_for_run(id: $crate::dispatch::RunId) -> Vec<$crate::AuditEntry>;
            ref audit_for_record(link: &str, key: &$crate::dispatch::RecordKey) -> Vec<$crate::AuditEntry>;
        );
    };
    (@impl $enum:ty, $variants:tt
        $($receiver:ident $method:ident($($arg:ident: $type:ty),* $(,)?) -> $output:ty;)+
    ) => {
        impl $crate::StateStore for $enum {
            $($crate::dispatch_store!(@method $variants $receiver $method($($arg: $type),*) -> $output);)+
            $crate::dispatch_store!(@digest_page $variants);
        }
    };
    (@digest_page [$($variant:ident),+]) => {

            fn digest_page(
                &self,
                link: &str,
                layout: &$crate::LinkLayout,
                after: Option<&$crate::dispatch::RecordKey>,
                limit: usize,
                each: impl FnMut($crate::dispatch::RecordKey, $crate::DigestEntry),
            ) -> Result<Option<$crate::dispatch::RecordKey>, $crate::StoreError> {
                match self {
                    $(Self::$variant(store) => store.digest_page(link, layout, after, limit, each),)+
                }
            }
    };
    (@match $self:ident.$method:ident $call:tt [$($variant:ident),+]) => {
        match $self {
            $(Self::$variant(store) => store.$method $call,)+
        }
    };
    (@method $variants:tt mut $method:ident($($arg:ident: $type:ty),*) -> $output:ty) => {
        fn $method(&mut self, $($arg: $type),*) -> Result<$output, $crate::StoreError> {
            $crate::dispatch_store!(@match self.$method($($arg),*) $variants)
        }
    };
    (@method $variants:tt ref $method:ident($($arg:ident: $type:ty),*) -> $output:ty) => {
        fn $method(&self, $($arg: $type),*) -> Result<$output, $crate::StoreError> {
            $crate::dispatch_store!(@match self.$method($($arg),*) $variants)
        }
    };
}

/// What the expansion of `dispatch_store!` names, so that its callers need not depend on the
/// crates these come from.
#[doc(hidden)]
pub use fieldsync_model::{RecordId, RecordKey, RunId, Side};
#[doc(hidden)]
pub use jiff::Timestamp;

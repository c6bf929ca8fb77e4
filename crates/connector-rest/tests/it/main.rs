//! The rest connector's tests, in one test binary: the connector against the fixture server
//! (`connector`, `link`, `fixture_smoke`, and `feed`: a change feed of revisioned documents, also
//! against a real CouchDB API) and against real Django and WordPress sites
//! (`django`, `wordpress`, `wordpress_batch`, `wordpress_harness`), whose conformance fixtures
//! share `site_fixture`.

mod connector;
mod django;
mod feed;
mod fixture;
mod fixture_smoke;
mod link;
mod site_fixture;
mod wordpress;
mod wordpress_batch;
mod wordpress_harness;

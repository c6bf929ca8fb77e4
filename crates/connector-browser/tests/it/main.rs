//! The browser connector's tests against the fixture admin site, in one test binary: the
//! connector in headless Chromium (`connector`) and the site itself spoken to with plain HTTP
//! (`site_smoke`). The browser's life cycle (`tests/browser.rs`) is a binary of its own: it
//! kills a copy of itself and counts Chromium's processes, which no other test may share.

mod connector;
mod site_smoke;

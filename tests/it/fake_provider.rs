//! A payment provider test double. It lives only in the tests: the shipped binary has
//! real providers (and the sandbox) only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use kassa::domain::Currency;
use kassa::domain::{Order, ProviderKind};
use kassa::providers::{
    CreatedPayment, PaymentRequest, Provider, ProviderError, ProviderFuture, RefundOutcome, RefundRequest,
    RefundState, TradeState,
};

pub struct FakeProvider {
    pub kind: ProviderKind,
    pub create_error: Mutex<Option<ProviderError>>,
    pub query_answer: Mutex<Result<TradeState, ProviderError>>,
    pub close_error: Mutex<Option<ProviderError>>,
    pub created: Mutex<Vec<PaymentRequest>>,
    /// Answers to successive refund calls (then: succeeded).
    pub refund_answers: Mutex<Vec<Result<RefundOutcome, ProviderError>>>,
    pub refund_query_answer: Mutex<Result<RefundState, ProviderError>>,
    pub refund_numbers: Mutex<Vec<String>>,
    /// Calls to `create_payment`, answered or not.
    pub creates: AtomicUsize,
    pub closes: AtomicUsize,
    pub queries: AtomicUsize,
    pub refunds: AtomicUsize,
    pub refund_queries: AtomicUsize,
    /// When set, every call goes to this provider instead (still counted): a real
    /// Alipay client against a gateway stand-in, with a timeout the test picks.
    pub delegate: Mutex<Option<Arc<dyn Provider>>>,
    /// When set, a query (counted) never answers: a provider that hangs mid-pass.
    pub query_hangs: std::sync::atomic::AtomicBool,
}

impl FakeProvider {
    pub fn new(kind: ProviderKind) -> Self {
        FakeProvider {
            kind,
            create_error: Mutex::new(None),
            query_answer: Mutex::new(Ok(TradeState::NotPaid)),
            close_error: Mutex::new(None),
            created: Mutex::new(Vec::new()),
            refund_answers: Mutex::new(Vec::new()),
            refund_query_answer: Mutex::new(Ok(RefundState::NotFound)),
            refund_numbers: Mutex::new(Vec::new()),
            creates: AtomicUsize::new(0),
            closes: AtomicUsize::new(0),
            queries: AtomicUsize::new(0),
            refunds: AtomicUsize::new(0),
            refund_queries: AtomicUsize::new(0),
            delegate: Mutex::new(None),
            query_hangs: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn delegate(&self) -> Option<Arc<dyn Provider>> {
        self.delegate.lock().unwrap().clone()
    }

    /// Every provider call so far: creations, queries, closes, refunds, refund queries.
    pub fn calls(&self) -> [usize; 5] {
        [
            self.creates.load(Ordering::SeqCst),
            self.queries.load(Ordering::SeqCst),
            self.closes.load(Ordering::SeqCst),
            self.refunds.load(Ordering::SeqCst),
            self.refund_queries.load(Ordering::SeqCst),
        ]
    }

    pub fn qr_for(order_id: &str) -> String {
        format!("https://qr.fake.test/{order_id}")
    }

    pub fn unknown(&self) -> ProviderError {
        ProviderError::Unknown {
            provider: self.kind,
            reason: "simulated timeout".into(),
        }
    }
}

impl Provider for FakeProvider {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn create_payment<'a>(&'a self, request: &'a PaymentRequest) -> ProviderFuture<'a, CreatedPayment> {
        Box::pin(async move {
            self.creates.fetch_add(1, Ordering::SeqCst);
            if let Some(e) = self.create_error.lock().unwrap().clone() {
                return Err(e);
            }
            if let Some(real) = self.delegate() {
                let created = real.create_payment(request).await?;
                self.created.lock().unwrap().push(request.clone());
                return Ok(created);
            }
            self.created.lock().unwrap().push(request.clone());
            Ok(CreatedPayment {
                qr_code: Self::qr_for(request.order_id.as_str()),
            })
        })
    }

    fn query<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, TradeState> {
        Box::pin(async move {
            self.queries.fetch_add(1, Ordering::SeqCst);
            if self.query_hangs.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if let Some(real) = self.delegate() {
                return real.query(order).await;
            }
            self.query_answer.lock().unwrap().clone()
        })
    }

    fn close<'a>(&'a self, order: &'a Order) -> ProviderFuture<'a, ()> {
        Box::pin(async move {
            self.closes.fetch_add(1, Ordering::SeqCst);
            if let Some(real) = self.delegate() {
                return real.close(order).await;
            }
            match self.close_error.lock().unwrap().clone() {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        order: &'a Order,
        refund: &'a RefundRequest,
    ) -> ProviderFuture<'a, RefundOutcome> {
        Box::pin(async move {
            self.refunds.fetch_add(1, Ordering::SeqCst);
            self.refund_numbers.lock().unwrap().push(refund.refund_no.clone());
            if let Some(real) = self.delegate() {
                return real.refund(order, refund).await;
            }
            let mut answers = self.refund_answers.lock().unwrap();
            if answers.is_empty() {
                Ok(RefundOutcome::Succeeded {
                    provider_refund_id: Some(format!("fake-{}", refund.refund_no)),
                })
            } else {
                answers.remove(0)
            }
        })
    }

    fn query_refund<'a>(&'a self, order: &'a Order, refund_no: &'a str) -> ProviderFuture<'a, RefundState> {
        Box::pin(async move {
            self.refund_queries.fetch_add(1, Ordering::SeqCst);
            if let Some(real) = self.delegate() {
                return real.query_refund(order, refund_no).await;
            }
            self.refund_query_answer.lock().unwrap().clone()
        })
    }

    fn currencies(&self) -> &'static [Currency] {
        match self.delegate() {
            Some(real) => real.currencies(),
            None => &Currency::ALL,
        }
    }
}

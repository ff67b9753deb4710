-- The sandbox gateway finds a trade by Alipay's trade_no when a call names it (trade_no
-- wins over out_trade_no); without an index each such call read the whole table. Only
-- scanned trades have a trade_no.
CREATE INDEX sandbox_trades_by_trade_no ON sandbox_trades (trade_no) WHERE trade_no IS NOT NULL;

-- Birthday gifts by local day and program, for `loyaltyd status` ("gifts of today").
CREATE INDEX IF NOT EXISTS birthday_logs_celebrated_on_idx
    ON birthday_logs (celebrated_on, program_id);

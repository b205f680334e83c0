from ticketing_payments.main import main

main()
